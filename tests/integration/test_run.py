"""End to end on a local Ray: every input accounted for, shards readable everywhere, resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from relshard.cli import app
from relshard.errors import OutputConflictError, RejectBudgetExceeded, SpecError
from relshard.pipelines.runner import run_pipeline
from relshard.record import SampleRecord
from relshard.spec import parse_spec
from tests.conftest import EXPECTED_REJECTS, REPO, SAMPLES

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _spec(src: Path, out: Path, **output):
    return parse_spec({
        "name": "itest",
        "sources": [{"path": str(src)}],
        "decode": {"frames_per_clip": 4, "max_side": 384},
        "output": {"path": str(out), **output},
        "runtime": {"progress": False},
    })


def _index(out: Path):
    return pq.ParquetDataset(out / "index").read().to_pylist() if (out / "index").exists() else []


def _rejects(out: Path):
    if not (out / "rejects").exists():
        return []
    return pq.ParquetDataset(out / "rejects").read().to_pylist()


def _relpath(uri: str, root: Path) -> str:
    return os.path.relpath(uri, root)


def test_every_input_is_written_or_rejected_and_shards_read_back(ray_session, messy_inputs,
                                                                  tmp_path):
    out = tmp_path / "out"
    summary = run_pipeline(_spec(messy_inputs, out, max_reject_fraction=0.9))
    n_inputs = sum(1 for p in messy_inputs.rglob("*") if p.is_file())
    assert summary.listed == n_inputs
    assert summary.inputs_written + summary.rejected_total == n_inputs

    rejects = {_relpath(r["uri"], messy_inputs): r for r in _rejects(out)}
    assert {k: v["reason"] for k, v in rejects.items()} == EXPECTED_REJECTS
    rows = _index(out)
    written_inputs = {r["input_key"] for r in rows}
    assert len(written_inputs) == summary.inputs_written == n_inputs - len(EXPECTED_REJECTS)
    assert not written_inputs & {r["input_key"] for r in rejects.values()}

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["totals"]["samples"] == len(rows)
    shard_paths = [out / s["url"] for s in manifest["shardlist"]]
    keys_in_tars = set()
    for path in shard_paths:
        listing = subprocess.run(["tar", "-tf", str(path)], check=True, capture_output=True,
                                 text=True).stdout.split()
        keys_in_tars |= {name.split(".", 1)[0] for name in listing}
    assert keys_in_tars == {r["key"] for r in rows}

    import webdataset as wds

    samples = list(wds.WebDataset([str(p) for p in shard_paths], shardshuffle=False))
    assert len(samples) == len(rows)
    by_key = {s["__key__"]: s for s in samples}
    for sample in samples:
        record = SampleRecord.model_validate_json(sample["json"])
        assert record.provenance.backend == "heuristic" and record.provenance.model is None
        assert sample["txt"].decode() == record.caption
        for subject in record.subjects:
            assert subject.crop and subject.crop in sample
    two = next(k for k in by_key if k.startswith("two_people-"))
    two_record = SampleRecord.model_validate_json(by_key[two]["json"])
    assert len(two_record.subjects) >= 2
    assert any(r.predicate in ("left_of", "right_of", "next_to") for r in two_record.relations)
    video = next(k for k in by_key if k.startswith("two_people_pan_vp9"))
    assert sum(1 for m in by_key[video] if m.startswith("f0")) == 4

    ds = ray_session.data.read_webdataset([str(p) for p in shard_paths], decoder=None)
    assert ds.count() == len(rows)


def test_rerun_resumes_and_changes_nothing(ray_session, messy_inputs, tmp_path):
    out = tmp_path / "out"
    spec = _spec(messy_inputs, out, max_reject_fraction=0.9)
    first = run_pipeline(spec)
    before = sorted(p.name for p in (out / "shards").iterdir())
    again = run_pipeline(spec)
    assert again.to_process == 0 and again.already_done == first.listed
    assert sorted(p.name for p in (out / "shards").iterdir()) == before
    shutil.copy(SAMPLES / "images/grace_hopper.jpg", messy_inputs / "images" / "late.jpg")
    third = run_pipeline(spec)
    assert third.to_process == 1 and third.inputs_written == 1
    keys = [r["key"] for r in _index(out)]
    assert len(keys) == len(set(keys))


def test_too_many_rejects_fail_loudly(ray_session, tmp_path):
    src = tmp_path / "junk"
    src.mkdir()
    for i in range(6):
        (src / f"j{i}.jpg").write_bytes(b"junk" * 10)
    (src / "ok.jpg").write_bytes((SAMPLES / "images/grace_hopper.jpg").read_bytes())
    with pytest.raises(RejectBudgetExceeded, match="6 of 7"):
        run_pipeline(_spec(src, tmp_path / "out", max_reject_fraction=0.5))
    # the CLI says it in one sentence and exits 1; the ledger already holds the reasons
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(_spec(src, tmp_path / "out2", max_reject_fraction=0.5)
                                    .model_dump(mode="json")))
    result = CliRunner().invoke(app, ["run", str(spec_file)])
    assert result.exit_code == 1, result.output
    assert "max_reject_fraction" in result.output and "Traceback" not in result.output
    assert len(_rejects(tmp_path / "out2")) == 6


def test_an_output_of_another_spec_is_refused(ray_session, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(SAMPLES / "images/grace_hopper.jpg", src / "a.jpg")
    run_pipeline(_spec(src, tmp_path / "out"))
    other = _spec(src, tmp_path / "out").model_copy(deep=True)
    other.decode.frames_per_clip = 2
    with pytest.raises(OutputConflictError, match="different spec"):
        run_pipeline(other)
    # a folder whose run failed before committing anything is not locked to that spec
    empty = tmp_path / "empty"
    with pytest.raises(SpecError, match="does not exist"):
        run_pipeline(_spec(tmp_path / "missing", empty))
    assert run_pipeline(_spec(src, empty)).inputs_written == 1


def test_a_crashing_decoder_rejects_one_input_and_the_run_goes_on(ray_session, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(SAMPLES / "images/grace_hopper.jpg", src / "ok.jpg")
    (src / "boom.crash").write_bytes(b"x")
    spec = _spec(src, tmp_path / "out", max_reject_fraction=0.9)
    spec = spec.model_copy(update={"plugins": ["tests.plugins.crashy"]})
    summary = run_pipeline(spec)
    assert summary.inputs_written == 1
    (reject,) = _rejects(tmp_path / "out")
    assert reject["reason"] == "worker_crash" and "SIGSEGV" in reject["detail"]
    assert reject["attempts"] == 2


def _many_inputs(root: Path, n: int) -> Path:
    root.mkdir()
    photos = sorted((SAMPLES / "images").glob("*.jpg"))
    for i in range(n):
        shutil.copy(photos[i % len(photos)], root / f"img{i:03d}.jpg")
    return root


def test_kill_9_of_the_driver_then_resume_gives_the_uninterrupted_key_set(ray_session, tmp_path):
    src = _many_inputs(tmp_path / "src", 48)
    clean = tmp_path / "clean"
    run_pipeline(_spec(src, clean, shard_max_samples=4))
    expected = sorted(r["key"] for r in _index(clean))

    out = tmp_path / "killed"
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(_spec(src, out, shard_max_samples=4).model_dump(mode="json")))
    address = ray_session.get_runtime_context().gcs_address
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "relshard.cli", "run", str(spec_file), "--address", address],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (out / "index").exists() and any((out / "index").glob("[!.]*.parquet")):
            break  # a committed unit (temporary files are hidden: .NAME.tmp-...)
        if proc.poll() is not None:
            pytest.fail("the run ended before it could be killed")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 0 < len(_index(out)) < len(expected)
    assert not (out / "manifest.json").exists()

    run_pipeline(_spec(src, out, shard_max_samples=4))
    keys = sorted(r["key"] for r in _index(out))
    assert keys == expected
    names = []
    for shard in (out / "shards").iterdir():
        with tarfile.open(shard) as tar:
            names += [m.name.split(".", 1)[0] for m in tar if m.name.endswith(".json")]
    assert sorted(names) == expected
