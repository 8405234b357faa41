"""The events stage: a bucket (or part of one) of an event log in, its windows out as samples.

Inputs come from the pre-pass (:mod:`.partition`, :mod:`.parts`, via :mod:`.expander`):
an input carries, in private ``extra`` keys, the folder of its rows and the path of
its log's ``meta.json`` (vocabulary, time format, whole-log fit), and for a part of a
bucket where it sits in its first and last sequence (bad rows never come here: the
driver writes them to the rejects ledger). For a bucket or part: sort by (sequence, time,
row), read ahead into the following parts when its last sequence goes on, cut each
sequence into the windows that start here, fit every window's Hawkes relations with
the log's decay (:mod:`relshard.events.fit_batch`), and build one sample per
window:

- ``KEY.times.npy`` float64 seconds since the epoch (UTC), ``KEY.types.npy`` int64
  vocabulary ids, ``KEY.marks.npy`` float64 ``(n, M)`` when marks are configured
  (all plain ``.npy``, version 1.0, no pickle);
- the record: ``source.sequence``, ``window_index``, ``event_count``, ``time_span``;
  types as subjects/attributes, ``excites`` relations, captions (see
  :mod:`relshard.events.describe`).

Keys: ``SEQKEY_wNNNNNN`` where ``SEQKEY`` derives from the log's key and the
sequence id, so they are stable across runs, bucket counts and part sizes.
"""

from __future__ import annotations

import io
import json
import traceback
from functools import lru_cache
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from fsspec.core import url_to_fs

from relshard.events.describe import captions, entities, excitation_relations
from relshard.events.fit_batch import fit_window_ranges, window_edges, window_notes
from relshard.events.hawkes_fit import Excitation
from relshard.events.parts import KEY, part_folder, read_folder
from relshard.events.source_fit import sequence_bounds
from relshard.events.windows import SeqContext, owned_windows, rows_needed
from relshard.plugins import import_plugins
from relshard.record import Provenance, SourceInfo, make_input_key, window_key
from relshard.shards.item import SampleDraft, WorkItem
from relshard.spec import DecodeSpec, Resources
from relshard.workers.stage import Stage

STAGE = "decode"
BUCKET_KEY = "_events_bucket"
WINDOW_FIT_ITER = 30
FIT_CHUNK = 4096
WINDOW_FIT_TOL = 1e-3


@lru_cache(maxsize=16)
def load_meta(path: str) -> dict[str, Any]:
    fs, p = url_to_fs(path)
    with fs.open(p, "r") as fh:
        meta: dict[str, Any] = json.load(fh)
    return meta


@lru_cache(maxsize=64)
def _npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def npy(arr: np.ndarray) -> bytes:
    """The ``.npy`` bytes of ``arr`` (what ``np.save(..., allow_pickle=False)`` writes)."""
    arr = np.ascontiguousarray(arr)
    if arr.dtype.hasobject:
        raise ValueError("object arrays are not stored")
    descr = cast(str, np.lib.format.dtype_to_descr(arr.dtype))  # a str: no structured dtypes
    return _npy_header(descr, arr.shape) + arr.tobytes()


def _context(bucket: dict[str, Any], seq: str) -> SeqContext:
    """Where this input's rows of ``seq`` sit in the whole sequence."""
    fields: dict[str, Any] = {}
    if bucket.get("first") and seq == bucket.get("first_seq"):
        fields.update(bucket["first"])
    if bucket.get("last") and seq == bucket.get("last_seq"):
        fields.update(bucket["last"])
    return SeqContext(**fields)


class EventWindower:
    """Builds the samples of one bucket (or part) input."""

    def __init__(self, decode: DecodeSpec) -> None:
        self.cfg = decode.window
        self.fit = self.cfg.fit_relations if self.cfg else True
        self.min_weight = self.cfg.min_weight if self.cfg else 0.1
        self.min_confidence = self.cfg.min_confidence if self.cfg else 0.99
        # windows of a log repeat a few sets of types: their entities are built once
        # (shared, never mutated: events samples skip the annotate stages)
        self._entities: dict[tuple[str, tuple[int, ...]], Any] = {}

    def samples(self, item: WorkItem, bucket: dict[str, Any]) -> list[SampleDraft]:
        meta = load_meta(bucket["meta"])
        vocab: list[str] = meta["vocab"]
        fit = meta.get("source_fit") or {}
        if not (fit.get("fitted") and self.fit):
            fit = {}
        table = read_folder(bucket["path"]).sort_by(KEY)
        n_local = table.num_rows
        if bucket.get("last"):
            table = self._read_ahead(table, bucket)
        ids, bounds = sequence_bounds(table, vocab)
        times = table.column("t").to_numpy()
        marks = (np.column_stack([table.column(f"m{i}").to_numpy()
                                  for i in range(len(meta["marks"]))])
                 if meta["marks"] else None)
        seqs = table.column("seq")
        cut: list[tuple[str, str | None, int, int, int]] = []  # key, sequence, index, lo, hi
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            if b <= a or a >= n_local:
                continue
            seq = seqs[int(a)].as_py()
            name = seq or None
            seq_key = make_input_key(f"seq/{name or ''}", prefix=meta["input_key"])
            owned = owned_windows(times[a:b], int(min(b, n_local) - a), _context(bucket, seq),
                                  self.cfg)
            for idx, lo, hi in owned:
                cut.append((window_key(seq_key, idx), name, idx, int(a + lo), int(a + hi)))
        edges, notes = self._edges(times, ids, cut, fit)
        beta = fit.get("beta")
        base = self._provenance(beta, meta, fit_note(meta) if self.fit else None)
        provs: dict[str | None, Provenance] = {None: base}
        for note in notes:
            if note not in provs:
                provs[note] = base.model_copy(update={"method": f"{base.method}; {note}"})
        return [
            self._sample(meta, key, name, idx, times[lo:hi], ids[lo:hi],
                         marks[lo:hi] if marks is not None else None, provs[note], found)
            for (key, name, idx, lo, hi), found, note in zip(cut, edges, notes, strict=True)
        ]

    def _read_ahead(self, table: pa.Table, bucket: dict[str, Any]) -> pa.Table:
        """Append the following parts' rows of the last sequence that the windows starting
        here need (only that sequence can go on past this part)."""
        seq = bucket["last_seq"]
        mine = pc.equal(table.column("seq"), seq).to_numpy(zero_copy_only=False)
        own_t = table.column("t").to_numpy()[mine]
        need, until = rows_needed(own_t, len(own_t), _context(bucket, seq), self.cfg)
        have, last_t = len(own_t), float(own_t[-1])
        fs, _ = url_to_fs(bucket["bucket_path"])
        more = [table]
        for q in range(int(bucket["index"]) + 1, int(bucket["n_parts"])):
            if have >= need and last_t >= until:
                break
            folder = part_folder(bucket["bucket_path"], q)
            if not fs.exists(url_to_fs(folder)[1]):
                continue
            nxt = read_folder(folder)
            rows = nxt.filter(pc.equal(nxt.column("seq"), seq)).sort_by(KEY)
            ends_here = rows.num_rows < nxt.num_rows  # other sequences follow in this part
            del nxt
            # keep only what the windows need: enough rows, and every row before `until`
            keep = max(need - have, int(np.searchsorted(rows.column("t").to_numpy(), until)))
            if keep < rows.num_rows:
                rows, ends_here = rows.slice(0, keep), True
            if rows.num_rows:
                more.append(rows)
                have += rows.num_rows
                last_t = float(pc.max(rows.column("t")).as_py())
            if ends_here:
                break
        return pa.concat_tables(more) if len(more) > 1 else table

    def _edges(self, times: np.ndarray, ids: np.ndarray,
               cut: list[tuple[str, str | None, int, int, int]],
               fit: dict[str, Any]) -> tuple[list[list[Excitation]], list[str | None]]:
        """Per window: the fitted excitations (compiled EM per window, in chunks), and what
        its provenance must add (a failed fit, floored background rates; None: nothing)."""
        if not fit or not cut:
            return [[] for _ in cut], [None] * len(cut)
        fitted = np.asarray(fit["types"], dtype=np.int64)
        remap = np.full(max(int(ids.max(initial=0)), int(fitted.max(initial=0))) + 1, -1,
                        dtype=np.int64)
        remap[fitted] = np.arange(len(fitted))
        u = np.where(ids >= 0, remap[np.maximum(ids, 0)], -1)
        init = (np.asarray(fit["mu"], dtype=np.float64),
                np.asarray(fit["alpha"], dtype=np.float64))
        spans = np.array([(lo, hi) for *_, lo, hi in cut], dtype=np.int64)
        out: list[list[Excitation]] = []
        notes: list[str | None] = []
        for start in range(0, len(cut), FIT_CHUNK):
            chunk = spans[start:start + FIT_CHUNK]
            try:
                fits = fit_window_ranges(times, u, chunk[:, 0], chunk[:, 1], len(fitted),
                                         fit["beta"], init, max_iter=WINDOW_FIT_ITER,
                                         tol=WINDOW_FIT_TOL)
            except (ArithmeticError, ValueError) as exc:  # the kernel is total; a net anyway
                out.extend([] for _ in chunk)
                notes.extend([f"relation fit failed ({type(exc).__name__}: "
                              f"{str(exc)[:120]}): no excites relations recorded"] * len(chunk))
                continue
            out.extend(window_edges(fits, fitted, fit["beta"], self.min_weight,
                                    self.min_confidence))
            notes.extend(window_notes(fits, fitted))
        return out, notes

    @staticmethod
    def _provenance(beta: float | None, meta: dict[str, Any] | None = None,
                    why_not: str | None = None) -> Provenance:
        method = (f"multivariate Hawkes, exponential kernel (beta={beta:.4g}/s from the whole "
                  f"log), EM warm-started from the whole log's fit, at most {WINDOW_FIT_ITER} "
                  "iterations" if beta else "no relation fit")
        if not beta and why_not:
            method += f" ({why_not})"
        spread = (meta or {}).get("ties_spread")
        if spread:
            method += f"; {spread}"
        return Provenance(backend="hawkes", method=method, relshard_version=_version())

    def _sample(self, meta: dict[str, Any], key: str, seq: str | None, idx: int,
                t: np.ndarray, u: np.ndarray, marks: np.ndarray | None, prov: Provenance,
                edges: list[Excitation]) -> SampleDraft:
        vocab = meta["vocab"]
        source = SourceInfo(
            uri=meta["uri"], input_key=meta["input_key"], modality="events",
            format=meta["columns"]["format"] if meta["columns"]["format"] != "auto" else None,
            decoder="events", sequence=seq, window_index=idx, event_count=len(t),
            time_span=[float(t[0]), float(t[-1])], duration=float(t[-1] - t[0]),
        )
        present = tuple(int(v) for v in np.unique(u))
        cache_key = (meta["input_key"], present)
        if cache_key not in self._entities:
            if len(self._entities) > 4096:
                self._entities.clear()
            self._entities[cache_key] = entities(present, vocab)
        subjects, attributes, typed = self._entities[cache_key]
        caption, rel = captions(edges, vocab, len(t), float(t[-1] - t[0]), seq, list(present))
        draft = SampleDraft(
            key=key, source=source, subjects=list(subjects), attributes=list(attributes),
            relations=[*typed, *excitation_relations(edges)], caption=caption,
            relational_caption=rel, provenance=prov,
        )
        draft.add_member("times.npy", npy(t.astype(np.float64, copy=False)))
        draft.add_member("types.npy", npy(u.astype(np.int64, copy=False)))
        if marks is not None:
            draft.add_member("marks.npy", npy(marks.astype(np.float64, copy=False)))
        return draft


def fit_note(meta: dict[str, Any]) -> str | None:
    """Why a log's windows carry no relation fit, from its whole-log fit (None: they do)."""
    fit = meta.get("source_fit") or {}
    return None if fit.get("fitted") else fit.get("reason")


def _version() -> str:
    from relshard import __version__

    return __version__


class EventsStage(Stage):
    """Windows of event-log buckets; every other input passes through untouched."""

    name = "events"

    def __init__(self, decode: DecodeSpec, plugins: list[str] | None = None) -> None:
        self.decode = decode
        self.plugins = list(plugins or [])
        self.batch_size = 1
        self.resources: Resources = decode.resources
        self._windower = EventWindower(decode)

    def process_batch(self, items: list[WorkItem]) -> list[WorkItem]:
        import_plugins(self.plugins)  # once per process, as in every stage
        for item in items:
            if item.rejected or item.input.modality != "events":
                continue
            bucket = item.input.extra.pop(BUCKET_KEY, None)
            if bucket is None:
                item.fail(STAGE, "not_partitioned", "an events input that did not come from "
                          "the events pre-pass")
            else:
                try:
                    item.samples = self._windower.samples(item, bucket)
                except Exception as exc:  # a bug or a vanished bucket file: reject, go on
                    tail = traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:]
                    item.fail(STAGE, "events_error", "".join(tail)[-2000:])
                    continue
                if not item.samples:
                    item.fail(STAGE, "no_windows", "no window reached window.min_events")
        return items


class SkipEvents(Stage):
    """Runs ``inner`` on every input except events ones, which pass through in place.

    Wraps the media and annotate stages of a spec that mixes media and event sources.
    """

    def __init__(self, inner: Stage) -> None:
        self.inner = inner
        self.name = inner.name
        self.batch_size = inner.batch_size
        self.resources = inner.resources
        self.stateful = inner.stateful

    def setup(self) -> None:
        self.inner.setup()

    def teardown(self) -> None:
        self.inner.teardown()

    def process_batch(self, items: list[WorkItem]) -> list[WorkItem]:
        media = [it for it in items if it.input.modality != "events"]
        if len(media) == len(items):
            return self.inner.process_batch(items)
        done = iter(self.inner.process_batch(media) if media else [])
        return [it if it.input.modality == "events" else next(done) for it in items]
