"""Expand the listing: an event-log input becomes its bucket inputs; its bad rows, rejects.

The runner lists sources as usual; :class:`EventsExpander` wraps that iterator.
Every input of an ``events`` source is streamed once by the pre-pass
(:func:`.partition.partition_log`) into ``OUTPUT/_work/events/FILEKEY/``, the
whole log is fitted once (:func:`relshard.events.source_fit.fit_source`),
and the input is replaced by:

- ``FILEKEY-bNNNNN``: one input per non-empty bucket (its windows are its samples), or
  ``FILEKEY-bNNNNN-pNNNNN`` per part of a bucket too big for one worker (:mod:`.parts`);
- its bad rows (``FILEKEY-rNNNNNNNNNN``: ``missing_time``, ``bad_time``,
  ``missing_type``, ``malformed_row``, with the row number) go straight to the rejects
  ledger (:mod:`.row_rejects`), as does ``FILEKEY`` itself, ``unreadable``, when the
  log cannot be read: they are inputs rejected by the driver, never listed for Ray.

What the pre-pass learned (vocabulary, time format and why, row counts, the
whole-log fit) goes to the manifest under ``events``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from fsspec import AbstractFileSystem
from fsspec.core import url_to_fs

from relshard.events.partition import cut_all_parts, partition_log, write_meta
from relshard.events.row_rejects import RowRejectLedger
from relshard.events.source_fit import fit_source
from relshard.events.stage import BUCKET_KEY
from relshard.events.ties import count_ties, spread_buckets, tie_note
from relshard.shards.item import InputRef
from relshard.shards.layout import is_local
from relshard.spec import EventColumns, PipelineSpec

log = logging.getLogger(__name__)

WORK_DIR = "_work/events"


@dataclass
class EventsSummary:
    logs: dict[str, dict[str, Any]] = field(default_factory=dict)  # file key -> meta
    rows_ok: int = 0
    bucket_inputs: int = 0

    def rows_per_write(self, spec: PipelineSpec) -> int | None:
        """Bucket inputs per write task so a write holds about ``shard_max_samples`` windows.

        None (the default) unless every source is an event log: media inputs are one or a
        few samples each.
        """
        if not self.bucket_inputs or any(s.modality != "events" for s in spec.sources):
            return None
        window = spec.decode.window
        stride = int(window.stride or window.events) if window and window.events else 128
        per_bucket = max(1.0, self.rows_ok / self.bucket_inputs / stride)
        return int(min(spec.output.shard_max_samples,
                       max(1, spec.output.shard_max_samples // per_bucket)))

    def manifest_extra(self) -> dict[str, Any]:
        if not self.logs:
            return {}
        keep = ("uri", "time_format", "time_format_reason", "rows", "rows_ok",
                "rows_rejected", "truncated", "buckets", "parts", "marks", "vocab",
                "type_counts", "t_min", "t_max", "time_resolution", "time_resolution_s",
                "ties", "source_fit", "unreadable")
        return {"events": {k: {f: m[f] for f in keep if f in m} for k, m in self.logs.items()}}


def work_root(output_root: str) -> str:
    return f"{output_root.rstrip('/')}/{WORK_DIR}"


def remove_work(output_root: str) -> None:
    """Delete the pre-pass scratch folder (after a run has committed everything)."""
    fs, path = url_to_fs(work_root(output_root))
    if fs.exists(path):
        fs.rm(path, recursive=True)
    parent = path.rsplit("/", 1)[0]
    if fs.exists(parent) and not fs.ls(parent):
        fs.rm(parent, recursive=True)


class EventsExpander:
    """Wraps a listing iterator; see the module docstring."""

    def __init__(self, spec: PipelineSpec, output_root: str, lister: Iterable[InputRef],
                 ledger: RowRejectLedger) -> None:
        self.spec = spec
        self.root = work_root(output_root)
        self.lister = lister
        self.ledger = ledger
        self.summary = EventsSummary()

    def __iter__(self) -> Iterator[InputRef]:
        for ref in self.lister:
            if ref.modality != "events":
                yield ref
                continue
            src = getattr(self.lister, "current", None)
            cols = getattr(src, "events", None) or EventColumns()  # default: time, type
            yield from self._expand(ref, cols)

    def _expand(self, ref: InputRef, cols: EventColumns) -> Iterator[InputRef]:
        if ref.input_key in self.ledger.done:  # rejected whole (unreadable) by an earlier run
            self.ledger.skipped += 1
            return
        try:
            part = partition_log(ref.uri, ref.input_key, ref.size, cols, self.root,
                                 on_reject=lambda row: self.ledger.add_row(ref.input_key,
                                                                           ref.uri, row))
        except BaseException:
            self.ledger.discard()
            raise
        if part.unreadable is not None:
            self.summary.logs[ref.input_key] = {"uri": ref.uri, "unreadable": part.unreadable}
            self.ledger.add(ref.input_key, ref.uri, "unreadable", part.unreadable)
            self.ledger.flush()
            return
        window = self.spec.decode.window
        step = part.meta.get("time_resolution_s")
        spread = cols.ties == "spread" and bool(step)
        if spread:  # before the parts are cut: they are cut on the spread times
            spread_buckets(part.fs, [part.bucket_path(b) for b in part.buckets], cast(float, step),
                           cols.tie_seed)
            part.meta["ties_spread"] = tie_note(part.meta["time_resolution"], step,
                                                cols.tie_seed)
        cut_all_parts(part, cols.part_rows, window)
        ties = count_ties(part.fs, [p.path for p in part.parts], step if spread else None)
        ties["exact"] = ties["events_checked"] >= int(part.meta["rows_ok"])
        part.meta["ties"] = {"mode": cols.ties, "spread": spread, **ties}
        fit_on = window.fit_relations if window else True
        max_events = window.source_fit_events if window else 200_000
        thresholds = (window.min_weight, window.min_confidence) if window else (0.1, 0.99)
        part.meta["source_fit"] = (_fit_source(part, max_events, thresholds) if fit_on
                                   else {"fitted": False, "reason": "window.fit_relations off"})
        fs, _ = url_to_fs(self.root)
        write_meta(fs, part)
        self.summary.logs[ref.input_key] = part.meta
        self.summary.rows_ok += int(part.meta["rows_ok"])
        log.info("events %s: %d rows, %d rejected, %d buckets, %d inputs, %d types, "
                 "time format %s", ref.uri, part.meta["rows"], part.meta["rows_rejected"],
                 len(part.buckets), len(part.parts), len(part.meta["vocab"]),
                 part.meta["time_format"])
        meta_uri = _uri(fs, part.meta_path)
        self.summary.bucket_inputs += len(part.parts)
        for p in part.parts:
            where = f"bucket={p.bucket}" + (f",part={p.index}" if p.index is not None else "")
            yield InputRef(f"{ref.input_key}{p.suffix}", f"{ref.uri}#{where}", "events", None,
                           {BUCKET_KEY: {"meta": meta_uri,
                                         **p.to_extra(lambda path: _uri(fs, path))}})
        self.ledger.flush()  # this log's bad rows are committed before its windows


def _fit_source(part: Any, max_events: int, thresholds: tuple[float, float]) -> dict[str, Any]:
    """The whole-log fit; a numeric error (the fit is total: a net only) costs the log its
    relations, never its windows."""
    try:
        return fit_source(part, max_events, *thresholds)
    except (ArithmeticError, ValueError, np.linalg.LinAlgError) as exc:
        log.warning("events %s: whole-log fit failed: %s", part.uri, exc)
        return {"fitted": False, "reason": f"the whole-log fit failed ({type(exc).__name__}: "
                f"{str(exc)[:200]}); windows are written without relations"}


def _uri(fs: AbstractFileSystem, path: str) -> str:
    return path if is_local(fs) else fs.unstrip_protocol(path)
