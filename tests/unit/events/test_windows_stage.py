"""Windows by count and time, and the events stage: members, records, stable keys."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from relshard.events.expander import EventsExpander
from relshard.events.row_rejects import RowRejectLedger
from relshard.events.stage import BUCKET_KEY, EventsStage, SkipEvents
from relshard.events.windows import (
    SeqContext,
    owned_windows,
    rows_needed,
    windows,
)
from relshard.shards.item import InputRef, WorkItem
from relshard.shards.members import item_members
from relshard.spec import DecodeSpec, EventColumns, EventWindow
from relshard.workers.stage import Stage
from tests.unit.events.logs import hawkes_rows, write_csv


def _count(n: int, size: int, stride: int) -> list[tuple[int, int, int]]:
    return windows(np.arange(float(n)), EventWindow(events=size, stride=stride, min_events=1))


def test_count_windows_cover_the_tail_without_subset_windows():
    assert _count(10, 4, 2) == [(0, 0, 4), (1, 2, 6), (2, 4, 8), (3, 6, 10)]
    assert _count(9, 4, 4) == [(0, 0, 4), (1, 4, 8), (2, 8, 9)]
    assert _count(3, 4, 2) == [(0, 0, 3)]
    assert _count(0, 4, 2) == []
    assert _count(10, 2, 5) == [(0, 0, 2), (1, 5, 7)]  # stride beyond the window: gaps


def test_time_windows_keep_their_index_when_empty_ones_are_skipped():
    t = np.array([0.0, 1, 2, 3, 10, 11, 12])
    assert windows(t, EventWindow(seconds=5.0, min_events=1)) == [(0, 0, 4), (2, 4, 7)]
    assert windows(t, EventWindow(seconds=5.0, stride=2.5, min_events=2)) == [
        (0, 0, 4), (3, 4, 7)]


@pytest.mark.parametrize("cfg", [
    EventWindow(events=7, stride=3, min_events=1), EventWindow(events=5, min_events=3),
    EventWindow(events=4, stride=9, min_events=1), EventWindow(seconds=6.0, stride=2.5),
    EventWindow(seconds=4.0, min_events=1), EventWindow(seconds=1.0, stride=7.0, min_events=1),
])
def test_runs_of_a_sequence_read_ahead_to_the_same_windows_as_the_whole(cfg):
    """Cut anywhere (ties in time across a cut included), each run owns the windows that
    start in it; read ahead by rows_needed, together they are the whole sequence's."""
    rng = np.random.default_rng(11)
    for trial in range(40):
        n = int(rng.integers(1, 60))
        t = np.sort(np.round(rng.exponential(1.0, n).cumsum(), 0))  # rounding makes ties
        want = windows(t, cfg)
        cuts = np.unique(np.concatenate(([0, n], rng.integers(0, n, int(rng.integers(0, 5))))))
        got = []
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            ctx = SeqContext(offset=int(a), t0=float(t[0]) if a else None,
                             t_prev=float(t[a - 1]) if a else None,
                             total=n if b < n else None, t_last=float(t[-1]) if b < n else None)
            need, until = rows_needed(t[a:b], int(b - a), ctx, cfg)
            stop = int(b)
            while stop < n and (stop - a < need or t[stop - 1] < until):
                stop += 1  # what reading the following parts adds
            got += [(k, int(a + lo), int(a + hi))
                    for k, lo, hi in owned_windows(t[a:stop], int(b - a), ctx, cfg)]
        assert got == want, (trial, cuts.tolist(), t.tolist())


def test_window_spec_needs_exactly_one_kind():
    with pytest.raises(ValueError, match="exactly one"):
        EventWindow(events=10, seconds=5.0)
    with pytest.raises(ValueError, match="whole number"):
        EventWindow(events=10, stride=2.5)
    assert windows(np.arange(5.0), EventWindow(events=2, min_events=2)) == [
        (0, 0, 2), (1, 2, 4)]


class _Spec:
    def __init__(self, decode: DecodeSpec) -> None:
        self.decode = decode


def _expand(tmp_path, rows, decode: DecodeSpec,
            buckets: int = 2) -> tuple[list[InputRef], EventsExpander]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = write_csv(tmp_path / "quakes.csv", rows, extra_lines="north,,M3,1,1\n")
    cols = EventColumns(time="time", type="mag_class", sequence="region", marks=["depth", "mag"],
                        buckets=buckets)

    class Lister:
        current = type("S", (), {"events": cols, "path": str(path)})()

        def __iter__(self):
            yield InputRef("quakes-abc", str(path), "events", path.stat().st_size)

    ledger = RowRejectLedger(str(tmp_path / "out"), "run0", set())
    exp = EventsExpander(_Spec(decode), str(tmp_path / "out"), Lister(), ledger)
    return list(exp), exp


def test_stage_writes_windows_with_npy_members_and_relations(tmp_path):
    rows = hawkes_rows(["north", "south"], horizon=4 * 3600.0, seed=5)
    decode = DecodeSpec(window={"events": 64, "stride": 32})
    refs, exp = _expand(tmp_path, rows, decode)
    assert all(BUCKET_KEY in r.extra for r in refs)  # bad rows are not listed for Ray...
    ledger = pq.ParquetDataset(tmp_path / "out" / "rejects").read().to_pylist()
    assert [(r["input_key"], r["reason"]) for r in ledger] == [  # ...they are in the ledger
        (f"quakes-abc-r{len(rows) + 1:010d}", "missing_time")]
    assert exp.ledger.written == 1 and exp.ledger.units == 1
    fit = exp.summary.logs["quakes-abc"]["source_fit"]
    assert fit["fitted"] and np.asarray(fit["alpha"])[0][1] > 0.4  # M3 -> M4 planted at 0.6
    # the whole log's relations and captions: the planted edge M3 -> M4 is among them
    edges = {(r["source_type"], r["target_type"]): r for r in fit["relations"]}
    assert ("M3", "M4") in edges and edges[("M3", "M4")]["predicate"] == "excites"
    assert edges[("M3", "M4")]["subject"] == "S1" and edges[("M3", "M4")]["object"] == "S2"
    assert "M3 are followed by M4" in fit["caption"]
    assert "{S1} are followed by {S2}" in fit["relational_caption"]
    assert "M3" not in fit["relational_caption"]
    items = EventsStage(decode).process_batch([WorkItem(r) for r in refs])
    vocab = exp.summary.logs["quakes-abc"]["vocab"]
    n_windows = total = 0
    for item in items:
        assert not item.rejected and item.input.extra == {}
        for m in item_members(item):
            data = dict(m.members)
            times = np.load(io.BytesIO(data[f"{m.key}.times.npy"]), allow_pickle=False)
            types = np.load(io.BytesIO(data[f"{m.key}.types.npy"]), allow_pickle=False)
            marks = np.load(io.BytesIO(data[f"{m.key}.marks.npy"]), allow_pickle=False)
            assert times.dtype == np.float64 and types.dtype == np.int64
            assert marks.shape == (len(times), 2)
            assert np.all(np.diff(times) >= 0)
            rec = json.loads(data[f"{m.key}.json"])
            assert rec["source"]["event_count"] == len(times)
            assert rec["source"]["time_span"] == [times[0], times[-1]]
            names = {a["id"]: a["text"] for a in rec["attributes"]}
            assert {names[f"A{t + 1}"] for t in set(types.tolist())} == \
                {vocab[t] for t in set(types.tolist())}
            for rel in rec["relations"]:
                if rel["predicate"] == "excites":
                    assert rel["weight"] >= 0.1 and rel["confidence"] >= 0.99
            assert "M3" not in rec["relational_caption"]
            n_windows += 1
            total += len(times)
    assert n_windows > 10 and total >= len(rows)  # windows overlap by half


def test_keys_are_stable_across_runs_and_bucket_counts(tmp_path):
    rows = hawkes_rows(["north", "south", "east"], horizon=1800.0, seed=2)
    decode = DecodeSpec(window={"events": 50})
    keys = []
    for buckets in (1, 3):
        refs, _ = _expand(tmp_path / str(buckets), rows, decode, buckets)
        items = EventsStage(decode).process_batch([WorkItem(r) for r in refs])
        keys.append(sorted(s.key for it in items for s in it.samples))
    assert keys[0] == keys[1] and len(set(keys[0])) == len(keys[0])


class _Count(Stage):
    name = "count"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def process_batch(self, items):
        self.seen.extend(it.input.input_key for it in items)
        return items


def test_skip_events_routes_event_inputs_around_media_stages():
    inner = _Count()
    items = [WorkItem(InputRef("a", "a.jpg", "image")), WorkItem(InputRef("b", "b", "events")),
             WorkItem(InputRef("c", "c.mp4", "video"))]
    out = SkipEvents(inner).process_batch(items)
    assert inner.seen == ["a", "c"] and [it.input.input_key for it in out] == ["a", "b", "c"]
