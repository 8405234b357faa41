"""Coarse timestamps on purpose: resolution, ties (counted across part cuts), spread, and
times too absurd to use (row rejects, never a rejected log)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from relshard.events.partition import cut_all_parts, partition_log
from relshard.events.parts import KEY, read_folder
from relshard.events.ties import (
    MARGIN,
    ResolutionTracker,
    count_ties,
    spread_buckets,
    unit_offsets,
)
from relshard.spec import EventColumns, EventWindow

HOUR0 = 3600.0 * 472_222  # a whole hour, in 2023


@pytest.mark.parametrize(("times", "label"), [
    (HOUR0 + 3600.0 * np.arange(10), "1 h"),
    (HOUR0 + 86400.0 * np.arange(3) - 22 * 3600.0, "1 day"),
    (HOUR0 + 60.0 * np.array([0, 7, 61]), "1 min"),
    (HOUR0 + np.array([0.0, 1.0, 59.0]), "1 s"),
    (HOUR0 + np.array([0.0, 0.001, 0.123, 1.5]), "1 ms"),
    (HOUR0 + np.random.default_rng(0).uniform(0, 100, 50), "continuous"),
])
def test_the_resolution_is_the_largest_unit_dividing_every_time(times, label):
    tracker = ResolutionTracker()
    tracker.add(times)
    assert tracker.result()[0] == label


def test_the_resolution_only_gets_finer_batch_by_batch():
    tracker = ResolutionTracker()
    tracker.add(HOUR0 + 3600.0 * np.arange(5))
    assert tracker.result() == ("1 h", 3600.0)
    tracker.add(np.array([HOUR0 + 120.0]))
    assert tracker.result() == ("1 min", 60.0)
    tracker.add(HOUR0 + 3600.0 * np.arange(5))
    assert tracker.result() == ("1 min", 60.0)
    assert ResolutionTracker().result() == ("continuous", None)


def test_spread_offsets_are_deterministic_uniform_and_inside_the_step():
    rows = np.arange(200_000)
    a, b = unit_offsets(rows, 3), unit_offsets(rows, 3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, unit_offsets(rows, 4))
    assert a.min() >= MARGIN and a.max() < 1 - MARGIN
    hist = np.histogram(a, bins=10, range=(MARGIN, 1 - MARGIN))[0]
    assert hist.min() > 0.9 * hist.mean()


def _log(tmp_path, lines, header="ts,kind"):
    path = tmp_path / "log.csv"
    path.write_text(header + "\n" + "\n".join(lines) + "\n")
    return path


def test_absurd_and_non_finite_times_are_row_rejects(tmp_path):
    lines = [f"{HOUR0 + i},a" for i in range(50)] + ["1e308,a", "-1e308,b", "inf,a", "nan,b"]
    cols = EventColumns(time="ts", type="kind", time_format="epoch_s")
    part = partition_log(str(_log(tmp_path, lines)), "log", None, cols, str(tmp_path / "w"))
    assert part.unreadable is None and part.meta["rows_ok"] == 50
    assert [(r.row, r.reason) for r in part.rejects] == [(51, "bad_time"), (52, "bad_time"),
                                                          (53, "bad_time"),
                                                          (54, "missing_time")]  # CSV null
    assert "beyond 1e+13 s of 1970" in part.rejects[0].detail
    assert part.meta["t_max"] == HOUR0 + 49 and part.meta["time_resolution"] == "1 s"


def _direct_ties(seq, t):
    table = pa.table({"seq": seq, "t": t}).group_by(["seq", "t"]).aggregate([("t", "count")])
    counts = table.column("t_count").to_numpy()
    return int(counts[counts > 1].sum()), int(counts.max())


def test_ties_are_counted_across_part_cuts_and_spread_keeps_parts_consistent(tmp_path):
    """One sequence of 5,000 events in whole seconds, cut into parts of 1,000 rows (tie
    groups straddle the cuts): the tie count is exact; spread moves every event inside its
    second, and the parts, cut on the spread times, still follow each other in order."""
    rng = np.random.default_rng(1)
    secs = np.floor(HOUR0 + rng.exponential(0.7, 5000).cumsum() / 3).astype(np.int64)
    rng.shuffle(secs)
    lines = [f"{s},k{i % 3}" for i, s in enumerate(secs)]
    path = _log(tmp_path, lines)
    cols = EventColumns(time="ts", type="kind", time_format="epoch_s", part_rows=1000)
    window = EventWindow(events=64)
    want_tied, want_largest = _direct_ties(np.zeros(len(secs)), secs.astype(np.float64))
    part = partition_log(str(path), "log", None, cols, str(tmp_path / "keep"))
    cut_all_parts(part, cols.part_rows, window)
    assert len(part.parts) >= 4
    got = count_ties(part.fs, [p.path for p in part.parts], None)
    assert (got["tied_events"], got["largest_instant"]) == (want_tied, want_largest)
    assert got["events_checked"] == 5000 and want_tied > 1000

    part = partition_log(str(path), "log", None, cols, str(tmp_path / "spread"))
    spread_buckets(part.fs, [part.bucket_path(b) for b in part.buckets], 1.0, seed=5)
    cut_all_parts(part, cols.part_rows, window)
    got = count_ties(part.fs, [p.path for p in part.parts], 1.0)
    assert (got["tied_events"], got["largest_instant"]) == (want_tied, want_largest)
    tables = [read_folder(p.path, fs=part.fs).sort_by(KEY) for p in part.parts]
    t = np.concatenate([tb.column("t").to_numpy() for tb in tables])
    assert np.all(np.diff(t) > 0)  # sorted across parts, and no tie left
    rows = np.concatenate([tb.column("row").to_numpy() for tb in tables])
    np.testing.assert_array_equal(np.floor(t), secs[rows].astype(np.float64))
