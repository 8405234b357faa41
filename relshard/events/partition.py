"""The events pre-pass: stream a log once, reject bad rows, hash-partition rows by sequence.

A log of ten million unsorted rows cannot be one unit of work, and sorting it
needs all of a sequence in one place. So the driver streams the file in Arrow
batches and writes every good row to one of ``B`` bucket Parquet files, chosen by a
stable hash (CRC-32) of its sequence id: all events of a sequence land in the same
bucket. A bucket of at most ``part_rows`` rows becomes one input of the pipeline (key
``FILEKEY-bNNNNN``, all its windows written together, so a resumed run never
duplicates windows); a bigger one (a long sequence, or a log without a sequence
column) is cut by :mod:`.parts` into consecutive parts, one input each. Each bad
row is an input rejected with its row number (key ``FILEKEY-rNNNNNNNNNN``), handed
to the caller as it is found (see :mod:`.row_rejects`): written + rejected still
equals inputs. Memory: the buffered rows (two flushes of ``FLUSH_ROWS``) and the
type counts, whatever the log's length or number of bad rows.

:func:`partition_log` runs the pass in steps: read (:mod:`.reader`), check
(:mod:`.rowcheck`: bad rows out, including times beyond ``MAX_ABS_SECONDS`` of the
epoch; the time format, type counts and time resolution (:mod:`.ties`) for the
meta), partition (a bucket writer here), then ``meta.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import zlib
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec import AbstractFileSystem
from fsspec.core import url_to_fs

from relshard.errors import SpecError
from relshard.events.parts import PartRef, cut_parts
from relshard.events.reader import UnreadableLog, iter_batches
from relshard.events.rowcheck import RowChecker, RowReject
from relshard.spec import EventColumns, EventWindow

log = logging.getLogger(__name__)

FLUSH_ROWS = 1_000_000
BUCKET_BYTES = 4 * 1024 * 1024
MAX_BUCKETS = 4096
META_NAME = "meta.json"


@dataclass
class Partition:
    """What the pre-pass of one log produced."""

    uri: str
    input_key: str
    folder: str
    meta_path: str
    buckets: list[int] = field(default_factory=list)  # buckets that hold rows
    bucket_rows: dict[int, int] = field(default_factory=dict)  # rows of each bucket
    parts: list[PartRef] = field(default_factory=list)  # the inputs, after cut_all_parts
    rejects: list[RowReject] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    unreadable: str | None = None  # why the whole log was rejected
    fs: Any = None  # the work folder's filesystem (paths above are paths of it)

    def bucket_path(self, bucket: int) -> str:
        """The bucket's folder: one Parquet file per flush that had rows for it."""
        return f"{self.folder}/bucket-{bucket:05d}"


def bucket_count(cols: EventColumns, size: int | None) -> int:
    if cols.sequence is None:
        return 1
    if cols.buckets:
        return cols.buckets
    return int(min(MAX_BUCKETS, max(1, (size or 0) // BUCKET_BYTES)))


def _bucket_ids(seq: pa.Array, n_buckets: int) -> np.ndarray:
    if n_buckets == 1:
        return np.zeros(len(seq), dtype=np.int64)
    enc = pc.dictionary_encode(pc.fill_null(seq, ""))
    hashes = np.array([zlib.crc32(v.encode("utf-8")) % n_buckets
                       for v in enc.dictionary.to_pylist()], dtype=np.int64)
    ids: np.ndarray = hashes[enc.indices.to_numpy(zero_copy_only=False)]
    return ids


class _BucketWriter:
    """Buffers rows per bucket; each flush writes one Parquet file per bucket it has rows for.

    No writer stays open between flushes (an open Parquet writer holds megabytes of
    buffers, and a big log has thousands of buckets). A flush is written in a background
    thread while the next rows are read (Arrow's writer releases the GIL); at most one
    flush is in flight, so memory stays at two buffers. LZ4: these files are scratch,
    read once; zstd made writing them a third of the pre-pass.
    """

    def __init__(self, fs: AbstractFileSystem, part: Partition, schema: pa.Schema) -> None:
        self.fs, self.part, self.schema = fs, part, schema
        self.pending: dict[int, list[pa.Table]] = {}
        self.pending_rows = 0
        self.flushes = 0
        self.written: set[int] = set()
        self.rows: Counter[int] = Counter()  # rows per bucket
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="relshard-flush")
        self._inflight: Future[None] | None = None

    def add(self, table: pa.Table, buckets: np.ndarray) -> None:
        order = np.argsort(buckets, kind="stable")
        sorted_b = buckets[order]
        table = table.take(pa.array(order))
        cuts = np.flatnonzero(np.diff(sorted_b)) + 1
        starts = np.concatenate(([0], cuts))
        ends = np.concatenate((cuts, [len(sorted_b)]))
        for s, e in zip(starts, ends, strict=True):
            self.pending.setdefault(int(sorted_b[s]), []).append(table.slice(s, e - s))
            self.rows[int(sorted_b[s])] += int(e - s)
        self.pending_rows += table.num_rows
        if self.pending_rows >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        self.wait()
        work = []
        for b, parts in sorted(self.pending.items()):
            folder = self.part.bucket_path(b)
            if b not in self.written:
                self.fs.makedirs(folder, exist_ok=True)
                self.written.add(b)
            work.append((f"{folder}/flush-{self.flushes:05d}.parquet", parts))
        self._inflight = self._pool.submit(self._write, work)
        self.pending = {}
        self.pending_rows = 0
        self.flushes += 1

    def _write(self, work: list[tuple[str, list[pa.Table]]]) -> None:
        for path, parts in work:
            with self.fs.open(path, "wb") as fh:
                pq.write_table(pa.concat_tables(parts), fh, compression="lz4")

    def wait(self) -> None:
        """Wait for the flush in flight (its error, if any, is raised here)."""
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            inflight.result()

    def discard(self) -> None:
        """Stop after a failure: let the flush in flight end, keep nothing pending."""
        self.pending = {}
        with contextlib.suppress(Exception):
            self.wait()
        self._pool.shutdown()

    def close(self) -> list[int]:
        if self.pending:
            self.flush()
        self.wait()
        self._pool.shutdown()
        return sorted(self.written)


def _fresh_folder(work_root: str, input_key: str) -> tuple[Any, str]:
    """The log's work folder, emptied: a rerun starts from nothing."""
    fs, folder = url_to_fs(f"{work_root.rstrip('/')}/{input_key}")
    if fs.exists(folder):
        fs.rm(folder, recursive=True)
    fs.makedirs(folder, exist_ok=True)
    return fs, folder


def _source_size(uri: str, size: int | None) -> int | None:
    """The log's size in bytes (a single-file source is listed without one); None if unknown."""
    if size is not None:
        return size
    try:
        src_fs, src_path = url_to_fs(uri)
        return int(src_fs.size(src_path) or 0)
    except (OSError, ValueError):
        return None


def _drop(writer: _BucketWriter, part: Partition) -> None:
    writer.discard()
    with contextlib.suppress(OSError):
        part.fs.rm(part.folder, recursive=True)


def partition_log(uri: str, input_key: str, size: int | None, cols: EventColumns,
                  work_root: str, on_reject: Callable[[RowReject], None] | None = None
                  ) -> Partition:
    """Stream ``uri`` once into bucket files under ``work_root/input_key``; see the module doc.

    The steps: read (:func:`.reader.iter_batches`), check (:class:`.rowcheck.RowChecker`:
    bad rows out, good rows as a table), partition (:class:`_BucketWriter`, by a hash of
    the sequence), then the meta. Bad rows go to ``on_reject`` as they are found (the run
    writes them straight into the rejects ledger: memory does not grow with them); without
    it, to ``Partition.rejects``.
    """
    n_rejected = 0

    def reject(row: RowReject) -> None:
        nonlocal n_rejected
        n_rejected += 1
        if on_reject is None:
            part.rejects.append(row)
        else:
            on_reject(row)

    fs, folder = _fresh_folder(work_root, input_key)
    part = Partition(uri=uri, input_key=input_key, folder=folder,
                     meta_path=f"{folder}/{META_NAME}", fs=fs)
    n_buckets = bucket_count(cols, _source_size(uri, size))
    checker = RowChecker(uri, cols, reject)
    writer = _BucketWriter(fs, part, checker.schema)
    truncated: str | None = None
    try:
        for lb in iter_batches(uri, cols):
            table = checker.check(lb)
            if table is not None:
                writer.add(table, _bucket_ids(table.column("seq").combine_chunks(), n_buckets))
    except UnreadableLog as exc:
        if checker.rows_seen == 0:  # nothing could be read: the log is rejected whole
            _drop(writer, part)
            part.unreadable = str(exc)
            part.rejects = []
            return part
        # a log that breaks off (a truncated .gz, bytes cut mid-file): keep the rows read,
        # reject the rest as one input named after the first row that was not read
        row0 = checker.rows_seen
        reject(RowReject(row0 + 1, "truncated_log", f"data row {row0 + 1} and after: the log "
                         f"could not be read past data row {row0} ({exc})"))
        truncated = str(exc)
        checker.rows_seen += 1  # the unread tail counts as one row: rows = ok + rejected
    except BaseException:
        _drop(writer, part)
        raise
    try:
        checker.at_end()
    except SpecError:
        _drop(writer, part)
        raise
    part.buckets = writer.close()
    part.bucket_rows = {b: writer.rows[b] for b in part.buckets}
    part.rejects.sort(key=lambda r: r.row)  # empty when on_reject took them
    part.meta = {
        "uri": uri, "input_key": input_key, "columns": cols.model_dump(mode="json"),
        "rows": checker.rows_seen, "rows_rejected": n_rejected, "truncated": truncated,
        "buckets": n_buckets, "buckets_used": len(part.buckets), "marks": list(cols.marks),
        **checker.meta(),
    }
    write_meta(fs, part)
    return part


def write_meta(fs: AbstractFileSystem, part: Partition) -> None:
    with fs.open(part.meta_path, "w") as fh:
        json.dump(part.meta, fh, sort_keys=True)


def cut_all_parts(part: Partition, part_rows: int, window: EventWindow | None = None) -> None:
    """Fill ``part.parts``: each bucket as it is, or cut into parts (see :mod:`.parts`)."""
    part.parts = [ref for b in part.buckets
                  for ref in cut_parts(part.fs, part.bucket_path(b), b, part.bucket_rows[b],
                                       part_rows, window)]
    part.meta["parts"] = len(part.parts)
