"""Hostile conditions, end to end on Ray: two runs on one output, retried outages, a
source that holds its own output and a symlink loop (issue #14, pipeline half)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from relshard.cli import app
from relshard.pipelines.runner import run_pipeline
from relshard.record import make_input_key
from relshard.report.verify import verify_output
from relshard.shards import ShardWriter
from relshard.shards.lease import LEASE_NAME
from relshard.shards.ledger import RetrySelection
from relshard.spec import parse_spec
from tests.conftest import REPO, SAMPLES
from tests.integration.test_s3 import s3_env  # noqa: F401 - the moto S3 fixture
from tests.unit.shards.factory import rejected_item

pytestmark = [pytest.mark.ray, pytest.mark.slow]

IMAGES = ["chelsea_cat.jpg", "grace_hopper.jpg", "two_people.jpg"]


def _inputs(root: Path) -> Path:
    root.mkdir(parents=True)
    for name in IMAGES:
        shutil.copy(SAMPLES / "images" / name, root / name)
    return root


def _spec_data(src: Path, out: Path) -> dict:
    return {"name": "hostile", "sources": [{"path": str(src)}],
            "detect": {"backend": "none"}, "decode": {"max_side": 128},
            "output": {"path": str(out), "shard_max_samples": 2},
            "runtime": {"progress": False}}


def _index(out: Path) -> list[dict]:
    return pq.ParquetDataset(out / "index").read(columns=["key", "input_key"]).to_pylist()


def test_two_runs_started_together_on_one_output_write_every_key_once(tmp_path: Path) -> None:
    src, out = _inputs(tmp_path / "in"), tmp_path / "out"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(_spec_data(src, out)))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "relshard.cli", "run", str(spec), "--num-cpus", "1"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 2], results
    refused = next(r for r in results if r[0] == 2)
    assert "is in use by run" in " ".join(refused[2].split())
    rows = _index(out)
    assert len(rows) == len({r["key"] for r in rows}) == len(IMAGES)
    report = verify_output(str(out))
    assert report.ok, report.problems
    assert not (out / LEASE_NAME).exists()  # the winner gave it back
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["totals"]["inputs_written"] == len(IMAGES)


def test_retryable_rejects_are_retried_on_request_and_superseded(ray_session,
                                                                 tmp_path: Path) -> None:
    src, out = _inputs(tmp_path / "in"), tmp_path / "out"
    # an earlier run hit an outage on one input and rejected it as retryable
    outage = rejected_item("chelsea_cat", "backend_unavailable")
    assert outage.input.input_key == make_input_key("chelsea_cat.jpg")
    with ShardWriter(str(out), "20000101000000000aaaa-00000", 10, 64_000_000) as w:
        w.add(outage)
    spec = parse_spec(_spec_data(src, out))

    plain = run_pipeline(spec)
    assert plain.already_done == 1 and plain.inputs_written == 2
    assert plain.retryable_left == 1  # a plain re-run does not retry it, and says so

    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(_spec_data(src, out)))
    again = CliRunner().invoke(app, ["run", str(spec_file)])
    assert again.exit_code == 0, again.output
    assert "--retry-rejects" in again.output and "1 rejected input(s)" in again.output

    retried = run_pipeline(spec, retry=RetrySelection())
    assert retried.retrying == {"backend_unavailable": 1}
    assert retried.inputs_written == 1 and retried.retryable_left == 0
    assert {r["input_key"] for r in _index(out)} == {make_input_key(n) for n in IMAGES}
    report = verify_output(str(out))
    assert report.ok, report.problems
    assert report.superseded_rejects == 1  # the reject row stays: history
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["totals"]["inputs_rejected"] == 0
    assert manifest["totals"]["inputs_written"] == len(IMAGES)
    after = run_pipeline(spec, retry=RetrySelection())  # nothing left to retry
    assert after.retrying == {} and after.already_done == len(IMAGES)


def test_an_output_inside_its_source_and_a_symlink_loop_do_not_disturb_runs(
        ray_session, tmp_path: Path) -> None:
    src = _inputs(tmp_path / "in")
    out = src / "out"
    os.symlink(src / "loop-b", src / "loop-a")
    os.symlink(src / "loop-a", src / "loop-b")
    os.symlink(src / "missing.jpg", src / "dangling.jpg")
    spec = parse_spec(_spec_data(src, out))
    first = run_pipeline(spec)
    assert first.output_excluded == [str(out)]
    assert first.rejected == {"symlink_loop": 2} and first.dangling_symlinks == 1
    assert first.inputs_written == len(IMAGES)
    second = run_pipeline(spec)  # its own shards, index, manifest are never listed
    assert second.to_process == 0 and second.already_done == len(IMAGES) + 2
    assert second.output_excluded == [str(out)]
    report = verify_output(str(out))
    assert report.ok, report.problems


def test_the_lease_on_s3_is_a_conditional_put(s3_env, tmp_path: Path) -> None:  # noqa: F811
    from relshard.shards.lease import OutputLease, OutputLockedError, read_lease

    env, fs = s3_env
    root = "s3://shards/leased"
    with OutputLease(root, "s3-holder", timeout_s=60) as lease:
        fs.invalidate_cache()
        assert fs.exists("shards/leased/lease.json")
        with pytest.raises(OutputLockedError, match="run s3-holder"):
            OutputLease(root, "s3-second").acquire()
        spec = tmp_path / "s3.json"
        spec.write_text(json.dumps({"name": "s3lease", "sources": [{"path": "s3://inputs/src"}],
                                    "detect": {"backend": "none"},
                                    "output": {"path": root}, "runtime": {"progress": False}}))
        refused = subprocess.run(
            [sys.executable, "-m", "relshard.cli", "run", str(spec)],
            env={**os.environ, **env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
            timeout=120)
        assert refused.returncode == 2, refused.stderr[-2000:]
        assert "is in use by run s3-holder" in " ".join(refused.stderr.split())
        assert lease.refresh() and lease.lost is None
    assert read_lease(root) is None  # released
    fs.pipe_file("shards/leased/lease.json", json.dumps({
        "owner": "old", "run_id": "dead", "host": "gone-host", "pid": 1, "user": "u",
        "started": 0, "heartbeat": 0, "timeout_s": 5}).encode())
    taker = OutputLease(root, "s3-taker")
    taker.acquire()
    assert "no heartbeat" in (taker.took_over or "")
    assert read_lease(root).run_id == "s3-taker"
    taker.release()
