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

A time that parses but lies beyond ``MAX_ABS_SECONDS`` of the epoch (``1e308`` in a CSV)
is a ``bad_time`` row like one that does not parse: no fit or window could use it. The
pass also finds the log's time resolution (:mod:`.ties`), for the manifest and
``events.ties``.
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
from fsspec.core import url_to_fs

from relshard.errors import SpecError
from relshard.spec import EventColumns, EventWindow
from relshard.workers.decode.events.parts import PartRef, cut_parts
from relshard.workers.decode.events.reader import UnreadableLog, iter_batches
from relshard.workers.decode.events.ties import ResolutionTracker
from relshard.workers.decode.events.timeparse import detect_format, parse_numbers, parse_times

log = logging.getLogger(__name__)

FLUSH_ROWS = 1_000_000
JUDGE_ROWS = 10_000  # rows after which a time column with no parsable value is refused
JUDGE_MIN = 20
BUCKET_BYTES = 4 * 1024 * 1024
MAX_BUCKETS = 4096
META_NAME = "meta.json"
MAX_ABS_SECONDS = 1e13  # about 317,000 years either side of 1970: beyond, a time is absurd


@dataclass
class RowReject:
    row: int  # 1-based data row (header excluded)
    reason: str  # missing_time | bad_time | missing_type | malformed_row
    detail: str


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


def _schema(marks: list[str]) -> pa.Schema:
    return pa.schema([("seq", pa.string()), ("t", pa.float64()), ("type", pa.string()),
                      ("row", pa.int64()), *[(f"m{i}", pa.float64()) for i in range(len(marks))]])


def _strings(col: pa.Array) -> pa.Array:
    text = pc.utf8_trim_whitespace(pc.cast(col, pa.string()))
    return pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)


def _bucket_ids(seq: pa.Array, n_buckets: int) -> np.ndarray:
    if n_buckets == 1:
        return np.zeros(len(seq), dtype=np.int64)
    enc = pc.dictionary_encode(pc.fill_null(seq, ""))
    hashes = np.array([zlib.crc32(v.encode("utf-8")) % n_buckets
                       for v in enc.dictionary.to_pylist()], dtype=np.int64)
    return hashes[enc.indices.to_numpy(zero_copy_only=False)]


class _BucketWriter:
    """Buffers rows per bucket; each flush writes one Parquet file per bucket it has rows for.

    No writer stays open between flushes (an open Parquet writer holds megabytes of
    buffers, and a big log has thousands of buckets). A flush is written in a background
    thread while the next rows are read (Arrow's writer releases the GIL); at most one
    flush is in flight, so memory stays at two buffers. LZ4: these files are scratch,
    read once; zstd made writing them a third of the pre-pass.
    """

    def __init__(self, fs: Any, part: Partition, schema: pa.Schema) -> None:
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


class _FormatJudge:
    """Stops a log whose time column does not match its format at all.

    If the first ``JUDGE_ROWS`` rows (or a whole shorter log of at least ``JUDGE_MIN``
    rows) have values but not one parses, the format is wrong for this column, not the
    rows: ten million ``bad_time`` rejects would hide that. The run stops with one
    sentence naming the column, a value and the fix.
    """

    def __init__(self) -> None:
        self.rows = self.bad = self.ok = 0
        self.example = ""
        self.done = False

    def add(self, n: int, bad: int, ok: int, col: pa.Array, bad_mask: np.ndarray) -> bool:
        """Count a batch; True when the verdict is in and the format is wrong."""
        if self.done:
            return False
        if bad and not self.example:
            self.example = str(col[int(np.flatnonzero(bad_mask)[0])].as_py())[:60]
        self.rows, self.bad, self.ok = self.rows + n, self.bad + bad, self.ok + ok
        if self.rows < JUDGE_ROWS:
            return False
        self.done = True
        return self._wrong()

    def at_end(self) -> bool:
        return not self.done and self.rows >= JUDGE_MIN and self._wrong()

    def _wrong(self) -> bool:
        return self.ok == 0 and self.bad >= 0.9 * self.rows

    def fail(self, uri: str, column: str, fmt: str, declared: str) -> None:
        fix = ("set sources[].events.time_format to the format of that column"
               if declared == "auto" else
               f"fix sources[].events.time_format (it says {declared}), or use auto")
        raise SpecError(f"Event log {uri!r}: none of the first {self.rows:,} values of column "
                        f"{column!r} parses as {fmt} (e.g. {self.example!r}); {fix}.")


def _reject_rows(rows: np.ndarray, reason: str, detail: str,
                 out: Callable[[RowReject], None]) -> None:
    for r in rows:
        out(RowReject(int(r) + 1, reason, f"data row {int(r) + 1}: {detail}"))


def _marks(batch: pa.RecordBatch, names: list[str]) -> list[pa.Array]:
    return [pa.array(parse_numbers(batch.column(n))) for n in names]


def partition_log(uri: str, input_key: str, size: int | None, cols: EventColumns,
                  work_root: str, on_reject: Callable[[RowReject], None] | None = None
                  ) -> Partition:
    """Stream ``uri`` once into bucket files under ``work_root/input_key``; see the module doc.

    Bad rows go to ``on_reject`` as they are found (the run writes them straight into the
    rejects ledger: memory does not grow with them); without it, to ``Partition.rejects``.
    """
    n_rejected = 0

    def reject(row: RowReject) -> None:
        nonlocal n_rejected
        n_rejected += 1
        if on_reject is None:
            part.rejects.append(row)
        else:
            on_reject(row)

    fs, folder = url_to_fs(f"{work_root.rstrip('/')}/{input_key}")
    if fs.exists(folder):
        fs.rm(folder, recursive=True)
    fs.makedirs(folder, exist_ok=True)
    part = Partition(uri=uri, input_key=input_key, folder=folder,
                     meta_path=f"{folder}/{META_NAME}", fs=fs)
    if size is None:  # a single-file source is listed without a size
        try:
            src_fs, src_path = url_to_fs(uri)
            size = int(src_fs.size(src_path) or 0)
        except (OSError, ValueError):
            size = None
    n_buckets = bucket_count(cols, size)
    writer = _BucketWriter(fs, part, _schema(cols.marks))
    fmt, why = cols.time_format, "set in the spec"
    counts: Counter[str] = Counter()
    row0 = ok_rows = 0  # row0: data rows seen (good, bad and malformed)
    judge = _FormatJudge()
    truncated: str | None = None
    t_min, t_max = np.inf, -np.inf
    resolution = ResolutionTracker()
    try:
        for lb in iter_batches(uri, cols):
            batch, rows = lb.batch, lb.rows
            for r, why in lb.malformed:
                reject(RowReject(r + 1, "malformed_row", f"data row {r + 1} {why}"))
            row0 = max(row0, int(rows[-1]) + 1 if len(rows) else 0,
                       *(r + 1 for r, _ in lb.malformed))
            n = batch.num_rows
            if n == 0:
                continue
            tcol = batch.column(cols.time)
            batch_fmt = fmt
            if fmt == "auto":
                batch_fmt, batch_why = detect_format(tcol)
                if tcol.null_count < n:  # values to judge by: the choice holds for the log
                    fmt, why = batch_fmt, batch_why
                    log.info("events %s: time_format auto chose %s (%s)", uri, fmt, why)
            times = parse_times(tcol, batch_fmt)
            absurd = np.abs(times) > MAX_ABS_SECONDS  # NaN compares False
            if absurd.any():
                times[absurd] = np.nan
            types = _strings(batch.column(cols.type))
            missing_t = tcol.is_null().to_numpy(zero_copy_only=False)
            if pa.types.is_string(tcol.type) or pa.types.is_large_string(tcol.type):
                missing_t |= pc.equal(pc.utf8_trim_whitespace(tcol), "").fill_null(True) \
                    .to_numpy(zero_copy_only=False)
            bad_t = np.isnan(times) & ~missing_t
            if judge.add(n, int(bad_t.sum()), int((~np.isnan(times)).sum()), tcol, bad_t):
                judge.fail(uri, cols.time, batch_fmt, cols.time_format)
            missing_ty = types.is_null().to_numpy(zero_copy_only=False) & ~np.isnan(times)
            _reject_rows(rows[missing_t], "missing_time", f"no value in column {cols.time!r}",
                         reject)
            for i in np.flatnonzero(bad_t):
                r, raw = int(rows[i]) + 1, tcol[int(i)].as_py()
                what = (f"is beyond {MAX_ABS_SECONDS:.0e} s of 1970 as a {batch_fmt} time"
                        if absurd[i] else f"is not a {batch_fmt} time")
                reject(RowReject(r, "bad_time", f"data row {r}: {str(raw)[:80]!r} {what}"))
            _reject_rows(rows[missing_ty], "missing_type", f"no value in column {cols.type!r}",
                         reject)
            good = ~np.isnan(times) & ~types.is_null().to_numpy(zero_copy_only=False)
            if not good.any():
                continue
            keep = pa.array(good)
            seq = (_strings(batch.column(cols.sequence)) if cols.sequence
                   else pa.nulls(n, pa.string()))
            seq = pc.fill_null(seq, "")
            table = pa.table([seq, pa.array(times), types, pa.array(rows),
                              *_marks(batch, cols.marks)], schema=writer.schema).filter(keep)
            counts.update(dict(zip(*(c.to_pylist() for c in pc.value_counts(
                table.column("type")).flatten()), strict=True)))
            good_t = times[good]
            resolution.add(good_t)
            t_min, t_max = min(t_min, float(good_t.min())), max(t_max, float(good_t.max()))
            writer.add(table, _bucket_ids(table.column("seq").combine_chunks(), n_buckets))
            ok_rows += table.num_rows
    except UnreadableLog as exc:
        if row0 == 0:  # nothing could be read: the log is rejected whole
            writer.discard()
            fs.rm(folder, recursive=True)
            part.unreadable = str(exc)
            part.rejects = []
            return part
        # a log that breaks off (a truncated .gz, bytes cut mid-file): keep the rows read,
        # reject the rest as one input named after the first row that was not read
        reject(RowReject(row0 + 1, "truncated_log", f"data row {row0 + 1} and after: the log "
                         f"could not be read past data row {row0} ({exc})"))
        truncated = str(exc)
        row0 += 1  # the unread tail counts as one row: rows = rows_ok + rows_rejected
    except BaseException:
        writer.discard()
        with contextlib.suppress(OSError):
            fs.rm(folder, recursive=True)
        raise
    if judge.at_end():
        writer.discard()
        fs.rm(folder, recursive=True)
        judge.fail(uri, cols.time, fmt, cols.time_format)
    part.buckets = writer.close()
    part.bucket_rows = {b: writer.rows[b] for b in part.buckets}
    part.rejects.sort(key=lambda r: r.row)  # empty when on_reject took them
    vocab = sorted(counts)
    res_label, res_step = resolution.result()
    part.meta = {
        "uri": uri, "input_key": input_key, "columns": cols.model_dump(mode="json"),
        "time_format": fmt, "time_format_reason": why, "rows": row0, "rows_ok": ok_rows,
        "rows_rejected": n_rejected, "truncated": truncated, "buckets": n_buckets,
        "buckets_used": len(part.buckets), "marks": list(cols.marks),
        "vocab": vocab, "type_counts": [counts[v] for v in vocab],
        "t_min": t_min if ok_rows else None, "t_max": t_max if ok_rows else None,
        "time_resolution": res_label, "time_resolution_s": res_step,
    }
    write_meta(fs, part)
    return part


def write_meta(fs: Any, part: Partition) -> None:
    with fs.open(part.meta_path, "w") as fh:
        json.dump(part.meta, fh, sort_keys=True)


def cut_all_parts(part: Partition, part_rows: int, window: EventWindow | None = None) -> None:
    """Fill ``part.parts``: each bucket as it is, or cut into parts (see :mod:`.parts`)."""
    part.parts = [ref for b in part.buckets
                  for ref in cut_parts(part.fs, part.bucket_path(b), b, part.bucket_rows[b],
                                       part_rows, window)]
    part.meta["parts"] = len(part.parts)
