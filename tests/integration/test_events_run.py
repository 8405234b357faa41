"""Event logs end to end on a local Ray: shards, rejects with row numbers, manifest, resume."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest

from relshard.pipelines.runner import run_pipeline
from relshard.spec import parse_spec
from tests.unit.workers.events.logs import hawkes_rows, write_csv

pytestmark = [pytest.mark.ray]

BAD = ("north,,M3,1,1\n"
       "south,someday,M4,1,1\n"
       "east,2023-11-14T22:13:20Z,,1,1\n")


def _spec(log, out):
    return parse_spec({
        "name": "quakes",
        "sources": [{"path": str(log), "modality": "events",
                     "events": {"time": "time", "type": "mag_class", "sequence": "region",
                                "marks": ["depth", "mag"], "time_format": "auto",
                                "buckets": 2}}],
        "decode": {"window": {"events": 128, "stride": 64}},
        "output": {"path": str(out), "shard_max_samples": 50},
        "runtime": {"progress": False},
    })


def test_event_log_to_shards_with_rejects_and_resume(ray_session, tmp_path):
    rows = hawkes_rows(["north", "south", "east"], horizon=3 * 3600.0, seed=11)
    log = write_csv(tmp_path / "quakes.csv.gz", rows, extra_lines=BAD)
    out = tmp_path / "out"
    summary = run_pipeline(_spec(log, out))
    assert summary.listed == 1
    assert summary.rejected == {"missing_time": 1, "bad_time": 1, "missing_type": 1}
    assert summary.inputs_written + summary.rejected_total == summary.to_process

    rejects = pq.ParquetDataset(out / "rejects").read().to_pylist()
    rows_rejected = sorted(int(r["uri"].rsplit("#row=", 1)[1]) for r in rejects)
    n = len(rows)
    assert rows_rejected == [n + 1, n + 2, n + 3]

    manifest = json.loads((out / "manifest.json").read_text())
    (meta,) = manifest["events"].values()
    assert meta["vocab"] == ["M3", "M4", "M5"] and meta["rows_ok"] == n
    assert meta["time_format"] == "iso8601" and meta["time_format_reason"]
    assert meta["source_fit"]["fitted"]
    assert not (out / "_work").exists()

    events = 0
    keys = []
    for shard in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".types.npy"):
                    types = np.load(io.BytesIO(tar.extractfile(member).read()),
                                    allow_pickle=False)
                    assert types.dtype == np.int64 and types.max() < 3
                    events += len(types)
                    keys.append(member.name.split(".", 1)[0])
    assert len(keys) == summary.samples_written == len(set(keys))
    assert events >= n  # overlapping windows cover every good event

    again = run_pipeline(_spec(log, out))
    assert again.to_process == 0 and again.already_done == summary.to_process
    assert json.loads((out / "manifest.json").read_text())["totals"]["samples"] == len(keys)


def test_a_spec_mixing_photos_and_one_long_sequence_in_gzip_jsonl(ray_session, tmp_path):
    """Media and events in one run; the log has no sequence column, so it is one sequence,
    cut into parts (part_rows 1000) whose windows are exactly the whole sequence's; its
    broken lines are rejects, not the end of the log."""
    import gzip
    import shutil

    from relshard.spec import EventWindow
    from relshard.workers.decode.events.windows import windows
    from tests.conftest import SAMPLES

    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sorted((SAMPLES / "images").glob("*.jpg"))[:2]:
        shutil.copy(p, photos / p.name)
    rows = hawkes_rows(["one"], horizon=12 * 3600.0, seed=3)
    log = tmp_path / "feed.jsonl.gz"
    with gzip.open(log, "wt") as fh:
        for r in rows:
            fh.write(json.dumps({"ts": round(r["epoch"] * 1000), "kind": r["mag_class"]}) + "\n")
        fh.write('{"ts": null, "kind": "M3"}\n{"ts": 1700000000000}\nnot json\n')
    out = tmp_path / "out"
    window = {"events": 100, "stride": 40}
    spec = parse_spec({
        "name": "mixed",
        "sources": [{"path": str(photos), "modality": "image"},
                    {"path": str(log), "modality": "events",
                     "events": {"time": "ts", "type": "kind", "time_format": "epoch_ms",
                                "part_rows": 1000}}],
        "decode": {"window": window},
        "output": {"path": str(out)},
        "runtime": {"progress": False},
    })
    summary = run_pipeline(spec)
    assert summary.inputs_written + summary.rejected_total == summary.to_process
    index = pq.ParquetDataset(out / "index").read().to_pylist()
    by_modality = {m: [r for r in index if r["modality"] == m] for m in ("image", "events")}
    assert len(by_modality["image"]) == 2
    assert summary.rejected == {"missing_time": 1, "missing_type": 1, "malformed_row": 1}
    (meta,) = json.loads((out / "manifest.json").read_text())["events"].values()
    assert meta["parts"] >= len(rows) // 1000 and meta["rows"] == len(rows) + 3
    times = np.sort(np.array([round(r["epoch"] * 1000) / 1000 for r in rows]))
    want = windows(times, EventWindow(**window))
    got = sorted(r["key"] for r in by_modality["events"])
    assert len(got) == len(set(got)) == len(want)


def test_the_bundled_event_example_runs_and_recovers_its_planted_relations(ray_session,
                                                                          tmp_path):
    """examples/events.yaml as a user runs it: three broken rows rejected by row number,
    the whole log's fit finds the four edges examples/make_event_log.py planted."""
    from relshard.inspect.stats import compute_stats
    from relshard.spec import load_spec
    from tests.conftest import REPO

    spec = load_spec(REPO / "examples" / "events.yaml")
    spec = spec.model_copy(update={
        "sources": [s.model_copy(update={"path": str(REPO / s.path)}) for s in spec.sources],
        "runtime": spec.runtime.model_copy(update={"progress": False})})
    summary = run_pipeline(spec, output=str(tmp_path / "out"))
    assert summary.rejected == {"missing_time": 1, "bad_time": 1, "malformed_row": 1}
    (meta,) = summary.manifest["events"].values()
    assert meta["time_format"] == "iso8601" and meta["rows"] == 11757
    fit = meta["source_fit"]
    got = {(r["source_type"], r["target_type"]): r["weight"] for r in fit["relations"]}
    planted = {("M3", "M4"): 0.5, ("M4", "M4"): 0.2, ("M4", "M5"): 0.15, ("M5", "M6"): 0.3}
    assert set(got) == set(planted)
    assert all(abs(got[k] - w) < 0.1 for k, w in planted.items())
    assert 200 < fit["mean_delay_s"] < 450  # planted: 300 s
    stats = compute_stats(str(tmp_path / "out"), records=0)
    assert stats.event_rows_ok == 11754
    assert stats.reject_rate == pytest.approx(3 / (1 + 3 + 11754))
