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
from tests.unit.events.logs import hawkes_rows, write_csv

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

    from relshard.events.windows import windows
    from relshard.spec import EventWindow
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
    from relshard.report.stats import compute_stats
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


# --- issue #13: real logs (rare types, coarse times, unsorted bursts) never lose the log ---


def _windows(out):
    """Every window of an output: (record, times, types)."""
    found = []
    for shard in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            members = {m.name: m for m in tar.getmembers()}
            for name, member in members.items():
                if not name.endswith(".json"):
                    continue
                key = name[:-len(".json")]
                record = json.loads(tar.extractfile(member).read())
                times, types = (np.load(io.BytesIO(tar.extractfile(members[f"{key}.{m}.npy"])
                                                   .read()), allow_pickle=False)
                                for m in ("times", "types"))
                found.append((record, times, types))
    return found


def _run_log(tmp_path, name, text, events, window):
    log = tmp_path / f"{name}.csv"
    log.write_text(text)
    out = tmp_path / f"out-{name}"
    spec = parse_spec({
        "name": name, "sources": [{"path": str(log), "modality": "events", "events": events}],
        "decode": {"window": window}, "output": {"path": str(out)},
        "runtime": {"progress": False}})
    summary = run_pipeline(spec)
    return summary, out


def _check_every_row_is_a_window_event_or_a_reject(summary, out, n_rows, window_events):
    """Non-overlapping windows: each good row is in exactly one window; the rest are row
    rejects; no log-level reject; relshard verify passes."""
    from relshard.report.verify import verify_output

    assert "events_error" not in summary.rejected and "unreadable" not in summary.rejected
    (meta,) = summary.manifest["events"].values()
    assert meta["rows"] == n_rows == meta["rows_ok"] + meta["rows_rejected"]
    assert window_events == meta["rows_ok"]
    assert summary.inputs_written + summary.rejected_total == summary.to_process
    report = verify_output(str(out))
    assert report.ok, report.problems
    return meta


def test_a_log_with_very_rare_types_and_absurd_times_keeps_every_window(ray_session, tmp_path):
    """The social-media feed of issue #13: two frequent client types and three used a
    handful of times, each right after a frequent one (the whole-log fit floors their
    background rates instead of dividing by zero); times of +-1e308 are row rejects."""
    rng = np.random.default_rng(13)
    rows = hawkes_rows(["feed"], horizon=6 * 3600.0, seed=13)
    lines = [f"{r['epoch']:.3f},{r['mag_class']}" for r in rows if r["mag_class"] != "M5"]
    frequent = [r["epoch"] for r in rows if r["mag_class"] == "M3"]
    for k, client in enumerate(["rare_a", "rare_b", "rare_c"]):
        for t in rng.choice(frequent, 2 + k, replace=False):
            lines.append(f"{t + 0.5:.3f},{client}")
    lines += ["1e308,M3", "-1e308,M4"]
    order = rng.permutation(len(lines))
    text = "time,client\n" + "\n".join(lines[i] for i in order) + "\n"
    summary, out = _run_log(tmp_path, "feed", text,
                            {"time": "time", "type": "client", "time_format": "epoch_s"},
                            {"events": 200})
    found = _windows(out)
    meta = _check_every_row_is_a_window_event_or_a_reject(summary, out, len(lines),
                                                          sum(len(t) for _, t, _ in found))
    assert summary.rejected == {"bad_time": 2}
    fit = meta["source_fit"]
    assert fit["fitted"] and np.isfinite(fit["mu"]).all() and min(fit["mu"]) > 0
    vocab = meta["vocab"]
    assert {vocab[t] for t in fit["mu_floored_types"]} <= {"rare_a", "rare_b", "rare_c"}
    assert all(np.isfinite(t).all() for _, t, _ in found)
    assert meta["time_resolution"] == "1 ms"


HOUR0 = 3600.0 * 472_222  # 2023-11-14T22:00:00Z, a whole hour


def test_hourly_times_with_a_sequence_column_spread_within_the_hour(ray_session, tmp_path):
    """The flights table of issue #13: times rounded to the hour, keyed by origin, 6
    carriers. The resolution (1 h) and the ties go to the manifest and relshard stats;
    ties: spread moves every flight to a point of its hour, from the seed, and says so."""
    from relshard.report.stats import compute_stats

    rng = np.random.default_rng(5)
    lines = []
    for origin in ("JFK", "LGA", "EWR", "BOS"):
        n = 600
        hours = np.sort(rng.integers(0, 24 * 30, n))
        for h in hours:
            carrier = f"C{rng.integers(0, 6)}"
            lines.append(f"{origin},{HOUR0 + 3600.0 * h:.0f},{carrier}")
    order = rng.permutation(len(lines))
    text = "origin,dep,carrier\n" + "\n".join(lines[i] for i in order) + "\n"
    events = {"time": "dep", "type": "carrier", "sequence": "origin", "time_format": "epoch_s",
              "ties": "spread", "tie_seed": 7}
    summary, out = _run_log(tmp_path, "flights", text, events, {"events": 100})
    found = _windows(out)
    meta = _check_every_row_is_a_window_event_or_a_reject(summary, out, len(lines),
                                                          sum(len(t) for _, t, _ in found))
    assert meta["time_resolution"] == "1 h" and meta["time_resolution_s"] == 3600.0
    ties = meta["ties"]
    assert ties["mode"] == "spread" and ties["spread"] and ties["exact"]
    assert ties["tied_events"] > 100 and ties["events_checked"] == len(lines)
    for record, times, _ in found:
        assert "spread uniformly within their 1 h step" in record["provenance"]["method"]
        assert np.all(np.diff(times) >= 0)
        offsets = (times - HOUR0) % 3600.0
        assert np.all((offsets > 30) & (offsets < 3570))  # inside the hour, off its ends
    stats = compute_stats(str(out), records=0)
    (times_fig,) = stats.event_logs.values()
    assert times_fig.resolution == "1 h" and times_fig.spread
    assert times_fig.tied_events == ties["tied_events"]


def test_an_unsorted_log_with_bursts_in_one_second_keeps_its_ties(ray_session, tmp_path):
    """Second-resolution bursts (dozens of events in one second), rows shuffled; ties: keep
    (the default) leaves the times alone: windows by time cover every row once."""
    rng = np.random.default_rng(9)
    lines = []
    for burst in np.sort(rng.uniform(0, 20_000, 60)):
        size = int(rng.integers(5, 60))
        secs = np.floor(1.7e9 + burst + rng.exponential(2.0, size))
        lines += [f"{s:.0f},k{rng.integers(0, 4)}" for s in secs]
    order = rng.permutation(len(lines))
    text = "ts,kind\n" + "\n".join(lines[i] for i in order) + "\n"
    summary, out = _run_log(tmp_path, "bursts", text,
                            {"time": "ts", "type": "kind", "time_format": "epoch_s"},
                            {"seconds": 900, "min_events": 1})
    found = _windows(out)
    meta = _check_every_row_is_a_window_event_or_a_reject(summary, out, len(lines),
                                                          sum(len(t) for _, t, _ in found))
    assert meta["time_resolution"] == "1 s"
    assert meta["ties"]["mode"] == "keep" and not meta["ties"]["spread"]
    assert meta["ties"]["tied_events"] > len(lines) // 2
    assert meta["ties"]["largest_instant"] >= 5
    for _, times, _ in found:
        assert np.all(times == np.floor(times))  # kept as they were
