"""Coarse timestamps on purpose: a log's time resolution, its ties, and ``events.ties``.

Real logs round their times: flights to the hour, posts to the second. Events at one
instant never excite each other in the Hawkes fits (their order in the log says nothing
about cause), so a log rounded to the hour loses every excitation quicker than an hour.

- **Resolution** (:class:`ResolutionTracker`, fed by the pre-pass batch by batch): the
  largest of 1 day, 1 h, 1 min, 1 s, 1 ms that divides every good timestamp (epoch
  seconds, UTC), else ``continuous``. The units nest, so a unit that fails once is
  dropped with every coarser one, and a continuous log costs one check per batch.
- **Ties** (:func:`count_ties`): how many events share their instant with another event
  of the same sequence, counted over the first ``TIE_SAMPLE`` rows of the log's inputs
  in sort order (``exact`` says whether that was all of them). Memory: one input.
- **Spread** (``events.ties: spread``, :func:`spread_buckets`): after the pre-pass and
  before the parts are cut, every event's time ``t`` of a log with a resolution step
  ``s`` becomes ``t + s * U``, ``U`` uniform in ``[0.01, 0.99)`` from a hash of the seed
  and the event's row number: a coarse time says only which step the event happened
  in, so every event (tied or not) is placed uniformly within it; the 1% margins keep
  it inside the step whatever the rounding, so events of different steps keep their
  order and the step of a spread time is ``floor(t / s)``. Deterministic: the same
  log, seed and spec give the same times, whatever the buckets or part sizes. A
  continuous log is left as it is (there is no step to spread within).

``keep`` (the default) suits logs whose ties are real (a batch job that emits many
events at once, or times as precise as the process); ``spread`` suits coarse logs of
a process that happens in continuous time (flights by the hour), where ``keep`` finds
no excitation faster than the step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec import AbstractFileSystem

from relshard.events.parts import KEY, parquet_files, read_folder
from relshard.shards.parquet_read import read_table

RESOLUTIONS = ((86400.0, "1 day"), (3600.0, "1 h"), (60.0, "1 min"), (1.0, "1 s"),
               (1e-3, "1 ms"))
CONTINUOUS = "continuous"
TIE_SAMPLE = 1_000_000
MARGIN = 0.01  # a spread time stays this fraction of a step away from the step's ends
_MASK = (1 << 64) - 1


def divides(times: np.ndarray, unit: float) -> bool:
    """Whether every time is a whole multiple of ``unit`` seconds (to float precision)."""
    q = times / unit
    off = np.abs(q - np.round(q))
    return bool(np.all(off <= np.maximum(1e-6, 8.0 * np.finfo(np.float64).eps * np.abs(q))))


class ResolutionTracker:
    """The largest unit of :data:`RESOLUTIONS` dividing every time seen (see the module doc)."""

    def __init__(self) -> None:
        self.left = list(range(len(RESOLUTIONS)))  # indices (coarse to fine) still dividing
        self.seen = 0

    def add(self, times: np.ndarray) -> None:
        self.seen += len(times)
        if not len(times) or not self.left:
            return
        keep: list[int] = []
        for i in reversed(self.left):  # finest first: a unit that fails fails all coarser
            if not divides(times, RESOLUTIONS[i][0]):
                break
            keep.append(i)
        self.left = sorted(keep)

    def result(self) -> tuple[str, float | None]:
        """``(label, step in seconds)``; ``(continuous, None)`` when no unit divides them all
        (or there were no times)."""
        if not self.seen or not self.left:
            return CONTINUOUS, None
        step, label = RESOLUTIONS[self.left[0]]
        return label, step


def unit_offsets(rows: np.ndarray, seed: int) -> np.ndarray:
    """Uniform numbers in ``[MARGIN, 1 - MARGIN)``, one per row number: splitmix64 of the row
    number and the seed (the same row and seed give the same number everywhere)."""
    add = np.uint64((0x9E3779B97F4A7C15 * (seed + 1)) & _MASK)
    with np.errstate(over="ignore"):
        z = rows.astype(np.uint64) + add
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return MARGIN + (1.0 - 2.0 * MARGIN) * u


def spread_times(t: np.ndarray, rows: np.ndarray, step: float, seed: int) -> np.ndarray:
    """``t + step * U(row)`` (see the module doc)."""
    return t + step * unit_offsets(rows, seed)


def spread_buckets(fs: AbstractFileSystem, folders: list[str], step: float, seed: int) -> None:
    """Rewrite every Parquet file of the bucket ``folders`` with spread times (one file in
    memory at a time; run before the parts are cut)."""
    for folder in folders:
        for name in parquet_files(fs, folder):
            table = read_table(fs, name)
            t = spread_times(table.column("t").to_numpy(), table.column("row").to_numpy(),
                             step, seed)
            table = table.set_column(table.schema.get_field_index("t"), "t",
                                     pa.array(t, pa.float64()))
            tmp = f"{name}.spread"
            with fs.open(tmp, "wb") as fh:
                pq.write_table(table, fh, compression="lz4")
            fs.mv(tmp, name)


def count_ties(fs: AbstractFileSystem, folders: list[str], step: float | None,
               limit: int = TIE_SAMPLE) -> dict[str, Any]:
    """Events sharing their instant with another of their sequence, over the inputs'
    ``folders`` (in sort order, consecutive parts of a bucket continuing each other) until
    ``limit`` rows. ``step``: the times were spread, an instant is ``floor(t / step)``."""
    checked = tied = largest = 0
    prev: tuple[str, float] | None = None
    prev_tied = False
    run = 0  # length of the run of equal keys that ends the previous folder
    for folder in folders:
        if checked >= limit:
            break
        table = read_folder(folder, ["seq", "t", "row"], fs).sort_by(KEY)
        n = table.num_rows
        if not n:
            continue
        t = table.column("t").to_numpy()
        inst = np.floor(t / step) if step else t
        seq = table.column("seq").combine_chunks()
        codes = seq.dictionary_encode().indices.to_numpy(zero_copy_only=False)
        same = (codes[1:] == codes[:-1]) & (inst[1:] == inst[:-1])
        mark = np.zeros(n, dtype=bool)
        mark[1:] |= same
        mark[:-1] |= same
        first = (seq[0].as_py(), float(inst[0]))
        if prev is not None and first == prev:  # a tie across the cut between two parts
            tied += 0 if prev_tied else 1  # the previous folder's last event
            mark[0] = True
        tied += int(mark.sum())
        # the longest run of one instant (runs continue across the cut)
        edges = np.flatnonzero(~np.concatenate(([False], same, [False])))
        lengths = np.diff(edges)
        if prev is not None and first == prev:
            lengths[0] += run
        largest = max(largest, int(lengths.max(initial=1)))
        run = int(lengths[-1])
        prev, prev_tied = (seq[n - 1].as_py(), float(inst[n - 1])), bool(mark[-1])
        checked += n
        del table
    return {"events_checked": checked, "tied_events": tied,
            "tied_fraction": round(tied / checked, 6) if checked else 0.0,
            "largest_instant": largest, "exact": True}


def tie_note(label: str, step: float | None, seed: int) -> str:
    return (f"times spread uniformly within their {label} step (events.ties: spread, "
            f"seed {seed})" if step else "")
