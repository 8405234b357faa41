"""Retries by reason: the retryable flag, superseded rejects, resume plans, counts (#14)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from relshard.record import RETRYABLE_REASONS, Reject, is_retryable_reason, make_input_key
from relshard.report.verify import verify_output
from relshard.shards import ShardWriter, build_manifest, write_manifest
from relshard.shards.index import REJECTS_SCHEMA
from relshard.shards.layout import OutputLayout
from relshard.shards.ledger import RetrySelection, plan_resume, read_ledger
from relshard.shards.recovery import committed_units
from tests.unit.shards.factory import make_item, rejected_item


def _write(root: Path, prefix: str, *items) -> None:
    with ShardWriter(str(root), prefix, 10, 64_000_000) as writer:
        for item in items:
            writer.add(item)


def _key(name: str) -> str:
    return make_input_key(f"{name}.jpg")


def _ledger(root: Path, **kw):
    layout = OutputLayout.open(str(root))
    return read_ledger(layout, committed_units(layout), **kw)


def test_retryable_follows_the_one_table_unless_given() -> None:
    assert {"backend_unavailable", "timeout", "worker_crash"} <= RETRYABLE_REASONS
    assert Reject(input_key="k", uri="u", stage="annotate", reason="backend_unavailable").retryable
    assert not Reject(input_key="k", uri="u", stage="decode", reason="corrupt").retryable
    assert not Reject(input_key="k", uri="u", stage="annotate", reason="invalid_output").retryable
    assert Reject(input_key="k", uri="u", stage="x", reason="corrupt", retryable=True).retryable
    assert not is_retryable_reason("out_of_memory")  # documented: the same spec hits it again


def test_the_rejects_file_carries_the_flag(tmp_path: Path) -> None:
    _write(tmp_path, "r1", rejected_item("a", "backend_unavailable"), rejected_item("b"))
    table = pq.read_table(next((tmp_path / "rejects").glob("*.parquet")))
    assert table.schema.field("retryable").type == pa.bool_()
    assert dict(zip(table["reason"].to_pylist(), table["retryable"].to_pylist(),
                    strict=True)) == {"backend_unavailable": True, "corrupt": False}


def test_older_rejects_files_without_the_column_are_read_through_the_table(
        tmp_path: Path) -> None:
    _write(tmp_path, "r1", rejected_item("a", "timeout"), rejected_item("b", "corrupt"))
    path = next((tmp_path / "rejects").glob("*.parquet"))
    old = pq.read_table(path).drop_columns(["retryable"])
    assert "retryable" in REJECTS_SCHEMA.names and "retryable" not in old.schema.names
    pq.write_table(old, path)
    ledger = _ledger(tmp_path)
    assert {r.reason: r.retryable for r in ledger.rejected.values()} == {"timeout": True,
                                                                         "corrupt": False}


def test_resume_plan_skips_rejects_unless_retried(tmp_path: Path) -> None:
    _write(tmp_path, "r1", make_item("ok"), rejected_item("outage", "backend_unavailable"),
           rejected_item("broken", "corrupt"))
    layout = OutputLayout.open(str(tmp_path))
    units = committed_units(layout)
    plain = plan_resume(layout, units)
    assert plain.done == {_key("ok"), _key("outage"), _key("broken")}
    assert plain.kept_retryable == 1
    retry = plan_resume(layout, units, RetrySelection.parse(None))
    assert retry.done == {_key("ok"), _key("broken")}
    assert retry.retrying == {"backend_unavailable": 1}
    named = plan_resume(layout, units, RetrySelection.parse("corrupt"))
    assert named.done == {_key("ok"), _key("outage")} and named.retrying == {"corrupt": 1}
    assert RetrySelection.parse("retryable").reasons is None


def test_a_later_write_supersedes_the_reject_and_everything_counts_it_once(
        tmp_path: Path) -> None:
    _write(tmp_path, "r1", make_item("ok"), rejected_item("flaky", "backend_unavailable"),
           rejected_item("twice", "timeout"))
    _write(tmp_path, "r2", make_item("flaky"), rejected_item("twice", "timeout"))  # retry run
    write_manifest(str(tmp_path), build_manifest(str(tmp_path), "demo", "h"))
    report = verify_output(str(tmp_path))
    assert report.ok, report.problems
    assert report.superseded_rejects == 1
    ledger = _ledger(tmp_path)
    assert set(ledger.rejected) == {_key("twice")} and ledger.repeated == 1
    assert ledger.by_reason() == {("decode", "timeout"): 1}
    manifest = build_manifest(str(tmp_path), "demo", "h")
    assert manifest["totals"]["inputs_written"] == 2
    assert manifest["totals"]["inputs_rejected"] == 1  # 'flaky' is written, 'twice' once
    layout = OutputLayout.open(str(tmp_path))
    assert _key("flaky") in plan_resume(layout, committed_units(layout),
                                        RetrySelection()).done
    from relshard.report.stats import compute_stats

    stats = compute_stats(str(tmp_path), records=0)
    assert stats.rejects.total == 1  # 3 reject rows: one superseded, one repeated


def test_a_reject_after_a_write_is_still_flagged(tmp_path: Path) -> None:
    _write(tmp_path, "r1", make_item("x"))
    _write(tmp_path, "r2", rejected_item("x", "backend_unavailable"))
    write_manifest(str(tmp_path), build_manifest(str(tmp_path), "demo", "h"))
    report = verify_output(str(tmp_path))
    assert any("is both in the index and in the rejects ledger" in p for p in report.problems)
