"""relshard stats: figures of real tiny builds, JSON round trip, comparison, schema versions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from relshard.report.compare import compare_stats
from relshard.report.figures import BuildStats, Distribution
from relshard.report.records import leaked_terms
from relshard.report.report_text import compare_renderable, stats_renderable
from relshard.report.stats import compute_stats
from relshard.report.tables import InspectError, UnknownSchemaVersion
from tests.unit.report.builds import write_build


@pytest.fixture()
def build(tmp_path: Path) -> Path:
    return write_build(tmp_path / "out")


def test_figures_of_a_build(build: Path) -> None:
    s = compute_stats(str(build))
    assert (s.samples, s.shards, s.name, s.spec_hash) == (9, 3, "demo", "hash-demo")
    assert s.modality == {"image": 5, "video": 4}
    assert s.schema_versions == {1: 9}
    assert s.bytes == sum(p.stat().st_size for p in (build / "shards").glob("*.tar"))
    assert s.subjects.counts == {1: 9} and s.relations.mean == 1.0
    assert s.frames.counts == {1: 5, 3: 4}
    assert s.backend == {"heuristic": 9} and s.model == {"(none)": 9}
    assert s.rejects.total == 2 and s.rejects.by_stage == {"decode": 2}
    assert s.rejects.by_reason == {"decode: corrupt": 1, "decode: empty_file": 1}
    assert s.inputs_written == 7 and s.reject_rate == pytest.approx(2 / 9)
    assert s.shard_balance.samples_by_shard == {
        "shards/w0-0000.tar": 4, "shards/w0-0001.tar": 3, "shards/w0-0002.tar": 2}
    spans: dict[str, int] = {}
    for path in (build / "index").glob("*.parquet"):
        for row in pq.read_table(path, columns=["shard", "size"]).to_pylist():
            spans[row["shard"]] = spans.get(row["shard"], 0) + row["size"]
    bal = s.shard_balance
    assert bal.bytes_by_shard == spans and bal.bytes_cv > 0
    assert bal.largest == max(spans, key=spans.__getitem__)
    assert bal.smallest == min(spans, key=spans.__getitem__)
    rec = s.records
    assert rec.sampled == 9 and rec.unreadable == 0
    assert rec.predicates == {"wears": 9} and rec.attribute_categories == {"clothing": 9}
    assert rec.leaked == 1 and rec.leak_rate == pytest.approx(1 / 9)
    assert rec.leak_examples == [s_key for s_key in rec.leak_examples if s_key.startswith("img0")]


def test_record_sample_is_bounded_and_can_be_skipped(build: Path) -> None:
    assert compute_stats(str(build), records=0).records.sampled == 0
    few = compute_stats(str(build), records=3).records
    assert 0 < few.sampled < 9 and few.requested == 3


def test_json_round_trip_and_text_report(build: Path) -> None:
    s = compute_stats(str(build))
    again = BuildStats.from_json_dict(s.to_json_dict())
    assert again == s
    console = Console(width=160, record=True)
    console.print(stats_renderable(s))
    text = console.export_text()
    for needle in ("samples", "decode: corrupt", "wears", "anonymization leaks", "1 of 9"):
        assert needle in text


def test_distribution_quantiles_and_histogram() -> None:
    d = Distribution.from_counts({0: 50, 1: 40, 10: 9, 100: 1})
    assert (d.total, d.min, d.p50, d.p90, d.p99, d.max) == (100, 0, 0, 1, 10, 100)
    assert d.mean == pytest.approx((40 + 90 + 100) / 100)
    edges, counts = d.histogram(10)
    assert sum(counts) == 100 and len(counts) == len(edges) - 1 <= 10
    assert Distribution.from_counts({}).total == 0


def test_leak_detection_ignores_placeholders() -> None:
    rec = {"relational_caption": "{S1} wears {A1}; {S1} holds a Red Hat.",
           "attributes": [{"text": "red hat"}, {"text": "cardboard box"}, {"text": "A1"}],
           "relations": [{"predicate": "wears"}]}
    assert leaked_terms(rec) == ["hat", "red"]
    assert leaked_terms({"relational_caption": "{S1} wears {A1}",
                         "attributes": [{"text": "wool sweater"}]}) == []
    assert leaked_terms({"relational_caption": "{S1} wears {A1}",
                         "attributes": [{"text": "wears"}],
                         "relations": [{"predicate": "wears"}]}) == []


def test_compare_reports_what_changed(tmp_path: Path) -> None:
    old = compute_stats(str(write_build(tmp_path / "a")))
    new = compute_stats(str(write_build(tmp_path / "b", n_image=2, n_video=4, rejects=5,
                                        backend="openai")))
    cmp = compare_stats(old, new)
    figures = {f.figure: f for f in cmp.figures}
    assert figures["samples"].old == 9 and figures["samples"].new == 10
    assert figures["rejected inputs"].delta == 3
    notes = "\n".join(cmp.notes)
    assert "new backend: 'openai'" in notes and "backend 'heuristic' is gone" in notes
    assert "modality 'video': share 44.4% -> 80.0%" in notes
    assert "reject rate rose" in notes
    console = Console(width=160, record=True)
    console.print(compare_renderable(cmp))
    assert "openai" in console.export_text()
    assert compare_stats(old, old).notes == []


def test_unknown_schema_version_is_named(build: Path) -> None:
    path = next((build / "index").glob("*.parquet"))
    table = pq.read_table(path)
    col = table.schema.get_field_index("schema_version")
    bumped = table.set_column(col, table.schema.field(col),
                              pa.array([7] * table.num_rows, pa.int32()))
    pq.write_table(bumped, path)
    with pytest.raises(UnknownSchemaVersion, match="schema version 7.*upgrade relshard"):
        compute_stats(str(build), records=0)


def test_missing_or_empty_output_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(InspectError, match="does not exist"):
        compute_stats(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InspectError, match="no index files.*--repair"):
        compute_stats(str(tmp_path / "empty"))


def test_reads_an_fsspec_url(build: Path) -> None:
    fs = fsspec.filesystem("memory")
    for path in build.rglob("*"):
        if path.is_file():
            fs.pipe(f"/h6copy/{path.relative_to(build)}", path.read_bytes())
    try:
        remote = compute_stats("memory://h6copy")
    finally:
        fs.rm("/h6copy", recursive=True)
    local = compute_stats(str(build))
    assert remote.model_dump(exclude={"root"}) == local.model_dump(exclude={"root"})


def test_build_without_rejects_or_manifest(tmp_path: Path) -> None:
    root = write_build(tmp_path / "c", rejects=0)
    (root / "manifest.json").unlink()
    shutil.rmtree(root / "rejects", ignore_errors=True)
    s = compute_stats(str(root))
    assert s.rejects.total == 0 and s.name is None and s.samples == 9
    assert s.inputs_written == 7  # from the unit footers
    assert s.bytes == sum(s.shard_balance.bytes_by_shard.values())


def test_record_of_an_unknown_schema_version_is_named(build: Path) -> None:
    from tests.unit.report.builds import first_record, rewrite_member, shards_of

    shard = shards_of(build)[0]
    name, record = first_record(shard)
    record["schema_version"] = 3
    rewrite_member(shard, name, json.dumps(record).encode())
    with pytest.raises(UnknownSchemaVersion, match="records of .* schema version 3"):
        compute_stats(str(build))
    assert compute_stats(str(build), records=0).samples == 9  # the index alone still reads


# --- leak totals and subjects by source (issue #11) ---------------------------------------

def _leaky_build(root: Path) -> Path:
    """9 samples: one leak fixed by a re-ask, two kept; subjects found by the detector, the
    model or both; 2 leak rejects and 1 other reject."""
    from relshard.record import Subject
    from relshard.shards import ShardWriter, build_manifest, write_manifest
    from tests.unit.shards.factory import make_item, rejected_item

    items = [make_item(f"img{i}", crop=i != 3) for i in range(7)]
    items.append(make_item("vid", n_samples=2, modality="video"))
    samples = [s for item in items for s in item.samples]
    samples[0].warnings = ["anonymization_leak_fixed: 'red'"]
    samples[1].warnings = ["anonymization_leak: 'hat'"]
    samples[2].warnings = ["some other warning", "anonymization_leak: 'red', 'hat'"]
    for sample in samples[:3]:  # + one model-only subject; S1 found by both
        sample.subjects = [sample.subjects[0].model_copy(update={"source": "both"}),
                           Subject(id="S2", kind="person", bbox=[0.5, 0.1, 0.9, 0.9],
                                   source="model")]
    samples[3].subjects, samples[3].attributes, samples[3].relations = [], [], []
    samples[3].relational_caption = ""
    items += [rejected_item("leak0", "anonymization_leak"), rejected_item("leak1",
              "anonymization_leak"), rejected_item("bad", "corrupt")]
    with ShardWriter(str(root), "w0", 4, 64_000_000) as writer:
        for item in items:
            writer.add(item)
    summary = writer.summary
    assert summary.samples_written == 9 and summary.inputs_rejected == 3
    assert summary.leaks == {"fixed": 1, "kept": 2}  # what `relshard run` totals
    write_manifest(str(root), build_manifest(str(root), "leaky", "hash-leaky"))
    return root


def _drop_later_columns(path: Path) -> None:
    from relshard.shards.index import LATER_INDEX_COLUMNS

    table = pq.read_table(path)
    pq.write_table(table.drop_columns(list(LATER_INDEX_COLUMNS)), path)


def test_leak_totals_and_subject_sources(tmp_path: Path) -> None:
    s = compute_stats(str(_leaky_build(tmp_path / "leaky")), records=0)
    lk = s.leaks
    assert (lk.annotated, lk.fixed, lk.kept, lk.rejected) == (9 + 2, 1, 2, 2)
    assert lk.rate == pytest.approx(5 / 11) and lk.total == 5
    src = s.subject_sources
    assert src.totals() == {"detector": 5, "model": 3, "both": 3}
    assert src.model.counts == {0: 6, 1: 3} and src.both.mean == pytest.approx(3 / 9)
    assert src.detector.counts == {0: 4, 1: 5}
    assert s.older_index_samples == 0
    assert BuildStats.from_json_dict(json.loads(json.dumps(s.to_json_dict()))) == s
    console = Console(width=200, record=True)
    console.print(stats_renderable(s))
    text = console.export_text()
    assert "anonymization leaks (all)" in text
    assert "5 (45.45% of 11 annotated samples): 1 fixed by a re-ask, 2 kept" in text
    assert "2 rejected" in text
    assert "subjects by source" in text and "model only" in text

    from relshard.report.report_html import render_html

    page = render_html(s)
    assert "1 fixed by a re-ask" in page and "Subjects by source" in page

    old = compute_stats(str(write_build(tmp_path / "plain")), records=0)
    figures = {f.figure: f for f in compare_stats(old, s).figures}
    assert figures["leak rejects"].delta == 2
    assert figures["model-only subjects / sample (mean)"].new == pytest.approx(3 / 9)
    assert any(n.startswith("leak rate (all) rose") for n in compare_stats(old, s).notes)


def test_an_index_without_the_new_columns_still_reads(tmp_path: Path) -> None:
    root = _leaky_build(tmp_path / "leaky")
    files = sorted((root / "index").glob("*.parquet"))
    _drop_later_columns(files[0])  # a mixed index: the first unit written by an older relshard
    s = compute_stats(str(root))
    first = pq.read_metadata(files[0]).num_rows
    assert s.older_index_samples == first == 4
    assert (s.leaks.fixed, s.leaks.kept, s.leaks.rejected) == (0, 0, 2)  # they were in unit 0
    assert s.subject_sources.totals() == {"detector": 11, "model": 0, "both": 0}
    assert s.samples == 9 and s.records.sampled == 9
    for path in files[1:]:  # a wholly older index
        _drop_later_columns(path)
    s = compute_stats(str(root))
    assert s.older_index_samples == 9 and s.leaks.total == 2 and s.subjects.total == 9
    console = Console(width=200, record=True)
    console.print(stats_renderable(s))
    assert "older index files" in console.export_text()
