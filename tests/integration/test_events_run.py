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
