"""Cut a bucket too big for one worker into parts that follow each other in sort order.

A worker sorts its input by (sequence, time, row) in memory. A bucket of more than
``part_rows`` rows (a long sequence, or a log without a sequence column, which is
one sequence) is range-partitioned on that same key instead: splitters come from a
strided sample of the bucket's keys, each of the bucket's flush files is read once
and its rows are routed to the part whose key range holds them
(``bucket-B/pNNNNN/fNNNNN.parquet``). Part ``r`` holds the keys from splitter
``r-1`` (included) to splitter ``r``, so the sorted parts laid end to end are the
sorted bucket, and a sequence covers a run of consecutive parts. Only the sequence
a part begins with can have rows in earlier parts, and only the one it ends with
can have rows in later parts; for those two, :func:`cut_parts` records where the
part sits in them (:class:`~.windows.SeqContext`: rows before it, first time, last
time before it, total rows, last time). The windows stage then computes exactly the
windows one pass over the whole sequence would, reading ahead into the following
parts for windows that start in its part and end beyond it. A part that would hold
no window's first event (windows longer than parts) is merged into the part before
it, so every input has windows to write.

Memory in the driver: one flush file (at most ``FLUSH_ROWS`` rows) and a sample of
about 64 keys per part, never the bucket.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec import AbstractFileSystem
from fsspec.core import url_to_fs

from relshard.events.windows import SeqContext, may_own_a_window
from relshard.shards.parquet_read import read_table
from relshard.spec import EventWindow

KEY = [("seq", "ascending"), ("t", "ascending"), ("row", "ascending")]
SAMPLE_PER_PART = 64


@dataclass
class PartRef:
    """One input of an events log: a whole bucket (``index`` None) or one part of it."""

    bucket: int
    index: int | None
    path: str  # the folder of its Parquet files
    rows: int
    first_seq: str = ""
    last_seq: str = ""
    first: dict[str, Any] | None = None  # SeqContext fields of its first sequence, if continued
    last: dict[str, Any] | None = None  # ... of its last sequence, if it goes on after
    n_parts: int = 1
    bucket_path: str = ""
    _stats: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def suffix(self) -> str:
        """What the input key adds to the log's key: ``-bNNNNN`` or ``-bNNNNN-pNNNNN``."""
        tail = f"-p{self.index:05d}" if self.index is not None else ""
        return f"-b{self.bucket:05d}{tail}"

    def to_extra(self, uri: Any) -> dict[str, Any]:
        """What the windows stage needs, as plain data for the input's ``extra``; ``uri``
        turns a path of the work folder's filesystem into a URI."""
        out: dict[str, Any] = {"path": uri(self.path)}
        if self.index is not None:
            out.update(bucket_path=uri(self.bucket_path), index=self.index, n_parts=self.n_parts,
                       first_seq=self.first_seq, last_seq=self.last_seq, first=self.first,
                       last=self.last)
        return out


def part_folder(bucket_path: str, index: int) -> str:
    return f"{bucket_path}/p{index:05d}"


def parquet_files(fs: AbstractFileSystem, folder: str) -> list[str]:
    return sorted(p for p in fs.ls(folder, detail=False) if p.endswith(".parquet"))


def read_folder(path: str, columns: list[str] | None = None,
                fs: AbstractFileSystem | None = None) -> pa.Table:
    """All rows of a bucket or part folder (its Parquet files, in order): ``path`` is a URI,
    or a path of ``fs``."""
    if fs is None:
        fs, folder = url_to_fs(path)
    else:
        folder = path
    tables = []
    for name in parquet_files(fs, folder):
        tables.append(read_table(fs, name, columns))
    return pa.concat_tables(tables)


def _splitters(fs: AbstractFileSystem, files: list[str], rows: int, n_parts: int) -> pa.Table:
    step = max(1, rows // (n_parts * SAMPLE_PER_PART))
    samples = []
    for name in files:
        keys = read_table(fs, name, ["seq", "t", "row"])
        samples.append(keys.take(pa.array(np.arange(0, keys.num_rows, step))))
    sample = pa.concat_tables(samples).sort_by(KEY)
    cuts = np.unique((np.arange(1, n_parts) * sample.num_rows) // n_parts)
    cuts = cuts[(cuts > 0) & (cuts < sample.num_rows)]
    return sample.take(pa.array(cuts))


def route(keys: pa.Table, splitters: pa.Table) -> np.ndarray:
    """For each row of ``keys`` (seq, t, row): the part whose key range holds it, i.e. how
    many splitters are at or before its key."""
    n = keys.num_rows
    both = pa.concat_tables([
        keys.select(["seq", "t", "row"]).append_column("data", pa.array(np.ones(n, np.int8))),
        splitters.select(["seq", "t", "row"]).append_column(
            "data", pa.array(np.zeros(splitters.num_rows, np.int8))),
    ])
    order = pc.sort_indices(both, sort_keys=[*KEY, ("data", "ascending")]).to_numpy()
    is_data = order < n
    before = np.cumsum(~is_data)  # splitters seen so far (a splitter sorts before its row)
    out = np.empty(n, dtype=np.int64)
    out[order[is_data]] = before[is_data]
    return out


def _summarize(fs: AbstractFileSystem, ref: PartRef) -> None:
    table = read_folder(ref.path, ["seq", "t"], fs)
    seq, t = table.column("seq"), table.column("t")
    ref.rows = table.num_rows
    ref.first_seq, ref.last_seq = pc.min(seq).as_py(), pc.max(seq).as_py()
    for end, name in (("first", ref.first_seq), ("last", ref.last_seq)):
        ts = pc.filter(t, pc.equal(seq, name))
        ref._stats[end] = (len(ts), pc.min(ts).as_py(), pc.max(ts).as_py())


def _contexts(parts: list[PartRef]) -> None:
    """Fill ``first`` / ``last`` of consecutive non-empty parts (see the module doc)."""
    open_seq, count, t0, t_max = None, 0, 0.0, 0.0
    for p in parts:
        f_n, _, f_max = p._stats["first"]
        l_n, l_min, l_max = p._stats["last"]
        if p.first_seq == open_seq:
            p.first = {"offset": count, "t0": t0, "t_prev": t_max}
            if p.last_seq == p.first_seq:
                count, t_max = count + f_n, f_max
                continue
        open_seq, count, t0, t_max = p.last_seq, l_n, l_min, l_max
    tail_seq, after, t_last = None, 0, 0.0
    for p in reversed(parts):
        f_n, _, f_max = p._stats["first"]
        l_n, _, _ = p._stats["last"]
        if p.last_seq == tail_seq:
            before = p.first["offset"] if p.first and p.first_seq == p.last_seq else 0
            p.last = {"total": before + l_n + after, "t_last": t_last}
            if p.first_seq == p.last_seq:
                after += l_n
                continue
        tail_seq, after, t_last = p.first_seq, f_n, f_max


def _idle(p: PartRef, cfg: EventWindow | None) -> bool:
    """A part whose only sequence goes on from earlier and starts no window in it."""
    if p.first is None or p.first_seq != p.last_seq:
        return False  # a sequence begins here: it has its first window here
    ctx = SeqContext(**p.first, **(p.last or {}))
    return not may_own_a_window(p.rows, p._stats["first"][2], ctx, cfg)


def _merge_idle(fs: AbstractFileSystem, parts: list[PartRef], cfg: EventWindow | None
                ) -> list[PartRef]:
    """Merge each part that starts no window into the one before it (see the module doc)."""
    while True:
        _contexts(parts)
        idle = [i for i, p in enumerate(parts) if i > 0 and _idle(p, cfg)]
        if not idle:
            return parts
        i = idle[0]
        into, gone = parts[i - 1], parts[i]
        for name in parquet_files(fs, gone.path):
            stem = name.rsplit("/", 1)[-1].removesuffix(".parquet")
            fs.mv(name, f"{into.path}/{stem}-m{gone.index:05d}.parquet")
        fs.rm(gone.path, recursive=True)
        _summarize(fs, into)
        into.first = into.last = None
        for p in parts:
            p.first = p.last = None
        parts = parts[:i] + parts[i + 1:]


def cut_parts(fs: AbstractFileSystem, bucket_path: str, bucket: int, rows: int, part_rows: int,
              window: EventWindow | None = None) -> list[PartRef]:
    """The inputs of one bucket: itself when it has at most ``part_rows`` rows, else its
    parts (the bucket's flush files are replaced by the parts' files); ``window``: the
    spec's windows, so that every part starts at least one."""
    if rows <= part_rows:
        return [PartRef(bucket, None, bucket_path, rows)]
    n_parts = math.ceil(rows / part_rows)
    files = parquet_files(fs, bucket_path)
    splitters = _splitters(fs, files, rows, n_parts)
    made: set[int] = set()
    for i, name in enumerate(files):
        table = read_table(fs, name)
        ids = route(table, splitters)
        for r in np.unique(ids):
            folder = part_folder(bucket_path, int(r))
            if r not in made:
                fs.makedirs(folder, exist_ok=True)
                made.add(int(r))
            with fs.open(f"{folder}/f{i:05d}.parquet", "wb") as fh:
                pq.write_table(table.filter(pa.array(ids == r)), fh, compression="zstd")
        del table
        fs.rm(name)
    parts = []
    for r in sorted(made):
        ref = PartRef(bucket, r, part_folder(bucket_path, r), 0,
                      n_parts=splitters.num_rows + 1, bucket_path=bucket_path)
        _summarize(fs, ref)
        parts.append(ref)
    return _merge_idle(fs, parts, window)
