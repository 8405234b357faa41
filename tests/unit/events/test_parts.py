"""A bucket bigger than part_rows is cut into consecutive parts, and its windows do not change.

The logs here have one sequence without a sequence column (the case that used to be
one bucket sorted in one worker), and a giant sequence beside small ones, with
timestamps rounded to whole seconds so equal times straddle the cuts.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from relshard.events import partition as part_mod
from relshard.events.expander import EventsExpander
from relshard.events.partition import cut_all_parts, partition_log
from relshard.events.parts import KEY, read_folder
from relshard.events.row_rejects import RowRejectLedger
from relshard.events.stage import EventsStage
from relshard.shards.item import InputRef, WorkItem
from relshard.spec import DecodeSpec, EventColumns
from tests.unit.events.logs import hawkes_rows, write_csv


def _epoch_s(epoch: float, i: int) -> str:
    return str(round(epoch))  # whole seconds: many equal times


@pytest.fixture(scope="module")
def rows():
    big = hawkes_rows(["giant"], horizon=20 * 3600.0, seed=4)
    small = hawkes_rows(["a", "b", "c"], horizon=1200.0, seed=5)
    return big + small


def test_parts_laid_end_to_end_are_the_sorted_bucket(tmp_path, rows, monkeypatch):
    monkeypatch.setattr(part_mod, "FLUSH_ROWS", 1500)  # several flush files to route
    path = write_csv(tmp_path / "log.csv", rows, time_fn=_epoch_s)
    cols = EventColumns(time="time", type="mag_class", sequence="region", buckets=1,
                        time_format="epoch_s")
    part = partition_log(str(path), "log", None, cols, str(tmp_path / "work"))
    whole = read_folder(part.bucket_path(0), fs=part.fs).sort_by(KEY)
    cut_all_parts(part, 1000)
    assert len(part.parts) >= len(rows) // 1000 - 1
    assert max(p.rows for p in part.parts) < 2000  # about part_rows each
    pieces = [read_folder(p.path, fs=part.fs).sort_by(KEY) for p in part.parts]
    assert pa.concat_tables(pieces).equals(whole)
    # the context of each part's first and last sequence matches the whole bucket
    seq = np.array(whole.column("seq").to_pylist())
    t = whole.column("t").to_numpy()
    start = 0
    for p, piece in zip(part.parts, pieces, strict=True):
        stop = start + piece.num_rows
        first, last = seq[start], seq[stop - 1]
        assert (p.first_seq, p.last_seq) == (first, last)
        before = int((seq[:start] == first).sum())
        if before:
            assert p.first == {"offset": before, "t0": t[seq == first][0],
                               "t_prev": t[:start][seq[:start] == first][-1]}
        else:
            assert p.first is None
        after = int((seq[stop:] == last).sum())
        if after:
            assert p.last == {"total": int((seq == last).sum()), "t_last": t[seq == last][-1]}
        else:
            assert p.last is None
        start = stop
    assert start == whole.num_rows


class _Spec:
    def __init__(self, decode: DecodeSpec) -> None:
        self.decode = decode


def _samples(tmp_path, path, cols: EventColumns, decode: DecodeSpec):
    class Lister:
        current = type("S", (), {"events": cols, "path": str(path)})()

        def __iter__(self):
            yield InputRef("log-abc", str(path), "events", path.stat().st_size)

    ledger = RowRejectLedger(str(tmp_path), "run0", set())
    refs = list(EventsExpander(_Spec(decode), str(tmp_path), Lister(), ledger))
    keys = [r.input_key for r in refs]
    items = EventsStage(decode).process_batch([WorkItem(r) for r in refs])
    assert not any(it.rejected for it in items)
    out = {}
    for it in items:
        for s in it.samples:
            assert s.key not in out  # no window is written by two parts
            out[s.key] = s
    return keys, out


@pytest.mark.parametrize("window", [
    {"events": 64, "stride": 24}, {"seconds": 900.0, "stride": 400.0},
    {"events": 2500, "stride": 1100},  # windows that span three parts of 1000 rows
    {"seconds": 20000.0, "stride": 7000.0},
])
@pytest.mark.parametrize("sequence", [None, "region"])
def test_windows_are_the_same_whether_or_not_a_bucket_is_cut(tmp_path, rows, window, sequence):
    path = write_csv(tmp_path / "log.csv", rows, time_fn=_epoch_s)
    decode = DecodeSpec(window=window)
    got = {}
    for part_rows in (10_000_000, 1000):
        cols = EventColumns(time="time", type="mag_class", sequence=sequence, buckets=1,
                            time_format="epoch_s", part_rows=part_rows)
        keys, got[part_rows] = _samples(tmp_path / str(part_rows), path, cols, decode)
        assert (len(keys) == 1) == (part_rows > len(rows))
        assert all(k.startswith("log-abc-b00000") for k in keys)
    whole, cut = got[10_000_000], got[1000]
    assert sorted(whole) == sorted(cut) and len(whole) >= 5
    for key, s in whole.items():
        other = cut[key]
        assert other.members == s.members  # the same events, types and marks, bit for bit
        assert (other.source.window_index, other.source.event_count, other.source.sequence) \
            == (s.source.window_index, s.source.event_count, s.source.sequence)
        assert [r.model_dump() for r in other.relations] == [r.model_dump() for r in s.relations]
        assert other.caption == s.caption
