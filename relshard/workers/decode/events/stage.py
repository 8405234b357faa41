"""The events stage: a bucket of an event log in, its windows out as samples.

Inputs come from the pre-pass (:mod:`.partition`, via :mod:`.listing`): a bucket
input carries, in private ``extra`` keys, the path of its bucket file and of its
log's ``meta.json`` (vocabulary, time format, whole-log fit); a bad-row input
carries its reject reason and is rejected here. For a bucket: sort by (sequence,
time, row), cut each sequence into windows, fit the window's Hawkes relations with
the log's decay, and build one sample per window:

- ``KEY.times.npy`` float64 seconds since the epoch (UTC), ``KEY.types.npy`` int64
  vocabulary ids, ``KEY.marks.npy`` float64 ``(n, M)`` when marks are configured
  (all written with ``allow_pickle=False``);
- the record: ``source.sequence``, ``window_index``, ``event_count``, ``time_span``;
  types as subjects/attributes, ``excites`` relations, captions (see
  :mod:`relshard.workers.relations.describe`).

Keys: ``SEQKEY_wNNNNNN`` where ``SEQKEY`` derives from the log's key and the
sequence id, so they are stable across runs and bucket counts.
"""

from __future__ import annotations

import io
import json
import traceback
from functools import lru_cache
from typing import Any

import numpy as np
from fsspec.core import url_to_fs

from relshard.record import Provenance, SourceInfo, make_input_key, window_key
from relshard.spec import DecodeSpec, Resources
from relshard.workers.decode.events.partition import read_bucket
from relshard.workers.decode.events.windows import windows
from relshard.workers.item import SampleDraft, WorkItem
from relshard.workers.relations.batch import fit_windows, window_excitations
from relshard.workers.relations.describe import captions, entities, excitation_relations
from relshard.workers.relations.hawkes import Excitation
from relshard.workers.relations.source_fit import sorted_sequences
from relshard.workers.stage import Stage

STAGE = "decode"
BUCKET_KEY = "_events_bucket"
REJECT_KEY = "_events_reject"
WINDOW_FIT_ITER = 30
FIT_CHUNK = 2048
WINDOW_FIT_TOL = 1e-3


@lru_cache(maxsize=16)
def load_meta(path: str) -> dict[str, Any]:
    fs, p = url_to_fs(path)
    with fs.open(p, "r") as fh:
        return json.load(fh)


def npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


class EventWindower:
    """Builds the samples of one bucket input."""

    def __init__(self, decode: DecodeSpec) -> None:
        self.cfg = decode.window
        self.fit = self.cfg.fit_relations if self.cfg else True
        self.min_weight = self.cfg.min_weight if self.cfg else 0.1
        self.min_confidence = self.cfg.min_confidence if self.cfg else 0.99

    def samples(self, item: WorkItem, bucket: dict[str, str]) -> list[SampleDraft]:
        meta = load_meta(bucket["meta"])
        vocab: list[str] = meta["vocab"]
        fit = meta.get("source_fit") or {}
        if not (fit.get("fitted") and self.fit):
            fit = {}
        table, ids, bounds = sorted_sequences(read_bucket(bucket["path"]), vocab)
        times = table.column("t").to_numpy()
        marks = (np.column_stack([table.column(f"m{i}").to_numpy()
                                  for i in range(len(meta["marks"]))])
                 if meta["marks"] else None)
        seqs = table.column("seq")
        cut: list[tuple[str, str | None, int, int, int]] = []  # key, sequence, index, lo, hi
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            if b <= a:
                continue
            name = seqs[int(a)].as_py() or None
            seq_key = make_input_key(f"seq/{name or ''}", prefix=meta["input_key"])
            for idx, lo, hi in windows(times[a:b], self.cfg):
                cut.append((window_key(seq_key, idx), name, idx, int(a + lo), int(a + hi)))
        edges = self._edges([(times[lo:hi], ids[lo:hi]) for _, _, _, lo, hi in cut], fit)
        return [
            self._sample(meta, key, name, idx, times[lo:hi], ids[lo:hi],
                         marks[lo:hi] if marks is not None else None, fit.get("beta"), found)
            for (key, name, idx, lo, hi), found in zip(cut, edges, strict=True)
        ]

    def _edges(self, wins: list[tuple[np.ndarray, np.ndarray]],
               fit: dict[str, Any]) -> list[list[Excitation]]:
        """Per window: the fitted excitations (vectorized over windows, in chunks)."""
        if not fit or not wins:
            return [[] for _ in wins]
        fitted = np.asarray(fit["types"], dtype=np.int64)
        remap = np.full(int(fitted.max()) + 1 if len(fitted) else 1, -1, dtype=np.int64)
        remap[fitted] = np.arange(len(fitted))
        init = (np.asarray(fit["mu"]), np.asarray(fit["alpha"]))
        out: list[list[Excitation]] = []
        for start in range(0, len(wins), FIT_CHUNK):
            chunk = [(t, np.where(u < len(remap), remap[np.minimum(u, len(remap) - 1)], -1))
                     for t, u in wins[start:start + FIT_CHUNK]]
            _, alpha, stderr = fit_windows(chunk, len(fitted), fit["beta"], init,
                                           max_iter=WINDOW_FIT_ITER, tol=WINDOW_FIT_TOL)
            for w, (t, u) in enumerate(chunk):
                present = np.unique(u[u >= 0])
                out.append(window_excitations(alpha[w], stderr[w], present, fitted, fit["beta"],
                                              self.min_weight, self.min_confidence)
                           if len(t) >= 3 else [])
        return out

    def _sample(self, meta: dict[str, Any], key: str, seq: str | None, idx: int,
                t: np.ndarray, u: np.ndarray, marks: np.ndarray | None, beta: float | None,
                edges: list[Excitation]) -> SampleDraft:
        vocab = meta["vocab"]
        source = SourceInfo(
            uri=meta["uri"], input_key=meta["input_key"], modality="events",
            format=meta["columns"]["format"] if meta["columns"]["format"] != "auto" else None,
            decoder="events", sequence=seq, window_index=idx, event_count=len(t),
            time_span=[float(t[0]), float(t[-1])], duration=float(t[-1] - t[0]),
        )
        present = sorted({int(v) for v in np.unique(u)})
        subjects, attributes, typed = entities(present, vocab)
        caption, rel = captions(edges, vocab, len(t), float(t[-1] - t[0]), seq, present)
        method = (f"multivariate Hawkes, exponential kernel (beta={beta:.4g}/s from the whole "
                  "log), EM" if beta else "no relation fit")
        draft = SampleDraft(
            key=key, source=source, subjects=subjects, attributes=attributes,
            relations=typed + excitation_relations(edges), caption=caption,
            relational_caption=rel,
            provenance=Provenance(backend="hawkes", method=method,
                                  relshard_version=_version()),
        )
        draft.add_member("times.npy", npy(t.astype(np.float64)))
        draft.add_member("types.npy", npy(u.astype(np.int64)))
        if marks is not None:
            draft.add_member("marks.npy", npy(marks.astype(np.float64)))
        return draft


def _version() -> str:
    from relshard import __version__

    return __version__


class EventsStage(Stage):
    """Windows of event-log buckets; every other input passes through untouched."""

    name = "events"

    def __init__(self, decode: DecodeSpec) -> None:
        self.decode = decode
        self.batch_size = 1
        self.resources: Resources = decode.resources
        self._windower = EventWindower(decode)

    def process_batch(self, items: list[WorkItem]) -> list[WorkItem]:
        for item in items:
            if item.rejected or item.input.modality != "events":
                continue
            extra = item.input.extra
            reject = extra.pop(REJECT_KEY, None)
            bucket = extra.pop(BUCKET_KEY, None)
            if reject is not None:
                item.fail(STAGE, reject[0], reject[1])
            elif bucket is None:
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
