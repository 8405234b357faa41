"""The check step of the events pre-pass: each batch's rows parsed, bad rows rejected.

:class:`RowChecker` takes the batches :func:`relshard.events.reader.iter_batches`
reads and returns, per batch, the table of its good rows (sequence, time, type,
row number, marks) for :mod:`.partition` to bucket. Every bad row becomes a
:class:`RowReject` handed to a callback as it is found: ``malformed_row`` (the
reader could not split it), ``missing_time``, ``bad_time`` (a time that does not
parse, or one beyond ``MAX_ABS_SECONDS`` of the epoch: ``1e308`` in a CSV, which
no fit or window could use) and ``missing_type``. With ``time_format: auto`` the
format is chosen from the first batch with values (:func:`.timeparse.detect_format`);
:class:`FormatJudge` stops a log whose time column matches the format not at all.
The checker also keeps what the log's meta needs: rows seen, type counts, the time
span and the time resolution (:mod:`.ties`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from relshard.errors import SpecError
from relshard.events.reader import LogBatch
from relshard.events.ties import ResolutionTracker
from relshard.events.timeparse import detect_format, parse_numbers, parse_times
from relshard.spec import EventColumns

log = logging.getLogger(__name__)

JUDGE_ROWS = 10_000  # rows after which a time column with no parsable value is refused
JUDGE_MIN = 20
MAX_ABS_SECONDS = 1e13  # about 317,000 years either side of 1970: beyond, a time is absurd


@dataclass
class RowReject:
    row: int  # 1-based data row (header excluded)
    reason: str  # missing_time | bad_time | missing_type | malformed_row
    detail: str


def row_schema(marks: list[str]) -> pa.Schema:
    return pa.schema([("seq", pa.string()), ("t", pa.float64()), ("type", pa.string()),
                      ("row", pa.int64()), *[(f"m{i}", pa.float64()) for i in range(len(marks))]])


def strings(col: pa.Array) -> pa.Array:
    text = pc.utf8_trim_whitespace(pc.cast(col, pa.string()))
    return pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)


class FormatJudge:
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


class RowChecker:
    """Checks one log's batches in order; see the module doc."""

    def __init__(self, uri: str, cols: EventColumns,
                 reject: Callable[[RowReject], None]) -> None:
        self.uri, self.cols, self.reject = uri, cols, reject
        self.schema = row_schema(cols.marks)
        self.fmt: str = cols.time_format  # "auto" until the first values decide
        self.why = "set in the spec"
        self.judge = FormatJudge()
        self.rows_seen = 0  # data rows seen (good, bad and malformed)
        self.rows_ok = 0
        self.counts: Counter[str] = Counter()
        self.t_min, self.t_max = np.inf, -np.inf
        self.resolution = ResolutionTracker()

    def check(self, lb: LogBatch) -> pa.Table | None:
        """The good rows of one batch as a table of :attr:`schema`; None when there are none."""
        cols, reject = self.cols, self.reject
        batch, rows = lb.batch, lb.rows
        for r, why in lb.malformed:
            reject(RowReject(r + 1, "malformed_row", f"data row {r + 1} {why}"))
        self.rows_seen = max(self.rows_seen, int(rows[-1]) + 1 if len(rows) else 0,
                             *(r + 1 for r, _ in lb.malformed))
        n = batch.num_rows
        if n == 0:
            return None
        tcol = batch.column(cols.time)
        times, batch_fmt, absurd = self._times(tcol, n)
        types = strings(batch.column(cols.type))
        missing_t = tcol.is_null().to_numpy(zero_copy_only=False)
        if pa.types.is_string(tcol.type) or pa.types.is_large_string(tcol.type):
            missing_t |= pc.equal(pc.utf8_trim_whitespace(tcol), "").fill_null(True) \
                .to_numpy(zero_copy_only=False)
        bad_t = np.isnan(times) & ~missing_t
        if self.judge.add(n, int(bad_t.sum()), int((~np.isnan(times)).sum()), tcol, bad_t):
            self.judge.fail(self.uri, cols.time, batch_fmt, cols.time_format)
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
            return None
        seq = (strings(batch.column(cols.sequence)) if cols.sequence
               else pa.nulls(n, pa.string()))
        seq = pc.fill_null(seq, "")
        table = pa.table([seq, pa.array(times), types, pa.array(rows),
                          *_marks(batch, cols.marks)], schema=self.schema).filter(pa.array(good))
        self._tally(table, times[good])
        return table

    def _times(self, tcol: pa.Array, n: int) -> tuple[np.ndarray, str, np.ndarray]:
        """Seconds (NaN where absent, unparsable or absurd), the batch's format, the absurd."""
        batch_fmt = self.fmt
        if self.fmt == "auto":
            batch_fmt, batch_why = detect_format(tcol)
            if tcol.null_count < n:  # values to judge by: the choice holds for the log
                self.fmt, self.why = batch_fmt, batch_why
                log.info("events %s: time_format auto chose %s (%s)", self.uri, self.fmt,
                         self.why)
        times = parse_times(tcol, batch_fmt)
        absurd = np.abs(times) > MAX_ABS_SECONDS  # NaN compares False
        if absurd.any():
            times[absurd] = np.nan
        return times, batch_fmt, absurd

    def _tally(self, table: pa.Table, good_t: np.ndarray) -> None:
        self.counts.update(dict(zip(*(c.to_pylist() for c in pc.value_counts(
            table.column("type")).flatten()), strict=True)))
        self.resolution.add(good_t)
        self.t_min = min(self.t_min, float(good_t.min()))
        self.t_max = max(self.t_max, float(good_t.max()))
        self.rows_ok += table.num_rows

    def at_end(self) -> None:
        """Raise :class:`SpecError` when the whole (short) log's format was wrong."""
        if self.judge.at_end():
            self.judge.fail(self.uri, self.cols.time, self.fmt, self.cols.time_format)

    def meta(self) -> dict[str, Any]:
        """The log's figures for ``meta.json``: format, rows, vocabulary, span, resolution."""
        vocab = sorted(self.counts)
        res_label, res_step = self.resolution.result()
        ok = self.rows_ok
        return {
            "time_format": self.fmt, "time_format_reason": self.why,
            "rows_ok": ok, "vocab": vocab, "type_counts": [self.counts[v] for v in vocab],
            "t_min": self.t_min if ok else None, "t_max": self.t_max if ok else None,
            "time_resolution": res_label, "time_resolution_s": res_step,
        }
