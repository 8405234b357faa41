"""Cut a sorted event sequence into windows (samples), by event count or by time span.

By count (``window.events = W``, ``stride = S``, default ``W``): windows start at
events ``0, S, 2S, ...``; the last window is the one that reaches the end (shorter
than ``W`` only when the whole sequence is), so the tail is never lost and no
window is a subset of the one before it.

By time (``window.seconds = D``, ``stride = S`` seconds, default ``D``): windows
cover ``[t0 + kS, t0 + kS + D)`` until a window reaches the last event; windows
with fewer than ``min_events`` events are skipped, but keep their index, so a
window's index always means the same time range.

A sequence too long for one worker is cut into consecutive parts (see
:mod:`.parts`); each part owns the windows whose first event it holds, and reads
ahead into the following parts for the rest of them. :class:`SeqContext` says
where the part's rows sit in their sequence, so that every part computes the same
windows, with the same indices, as one pass over the whole sequence would.

All functions return ``(index, start, stop)`` triples of positions into the times
they were given, with stable indices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from relshard.spec import EventWindow

DEFAULT_WINDOW = EventWindow(events=256, stride=128)


@dataclass(frozen=True)
class SeqContext:
    """Where a run of rows sits in its whole sequence (defaults: it is the whole sequence)."""

    offset: int = 0  # rows of the sequence before this run
    t0: float | None = None  # the sequence's first time (None: the run's first)
    t_prev: float | None = None  # the last time before this run (None: nothing before)
    total: int | None = None  # rows of the whole sequence (None: the run is its end)
    t_last: float | None = None  # the sequence's last time (None: the run's last)


WHOLE = SeqContext()


def _count_owned(n_local: int, avail: int, ctx: SeqContext, size: int, stride: int,
                 min_events: int) -> list[tuple[int, int, int]]:
    total = ctx.total if ctx.total is not None else ctx.offset + avail
    if n_local == 0 or total == 0:
        return []
    last_k = max(0, math.ceil((total - size) / stride))  # the window that reaches the end
    first_k = -(-ctx.offset // stride)
    stop_k = min(last_k, (ctx.offset + n_local - 1) // stride)
    out = []
    for k in range(first_k, stop_k + 1):
        start = k * stride
        stop = min(start + size, total)
        if stop - start >= min_events:
            out.append((k, start - ctx.offset, stop - ctx.offset))
    return out


def _time_owned(times: np.ndarray, n_local: int, ctx: SeqContext, span: float, stride: float,
                min_events: int) -> list[tuple[int, int, int]]:
    if n_local == 0:
        return []
    t0 = float(times[0]) if ctx.t0 is None else ctx.t0
    t_last = float(times[-1]) if ctx.t_last is None else ctx.t_last
    n_win = _window_count(t0, t_last, span, stride)
    if n_win <= 4 * len(times) + 1024:
        ks_all = np.arange(n_win)
    else:  # windows much shorter than the gaps: only those that hold an event (sparse)
        ks_all = _nonempty_candidates(times, t0, span, stride, n_win)
    begins = t0 + stride * ks_all
    # a window is owned here when its first event is: begin after everything before
    # this run, and at or before this run's last event
    owned = begins <= times[n_local - 1]
    if ctx.t_prev is not None:
        owned &= begins > ctx.t_prev
    ks = np.flatnonzero(owned)
    starts = np.searchsorted(times, begins[ks], side="left")
    ends = t0 + (stride * ks_all[ks] + span)
    if stride <= span:  # no gap of one float step between a window's end and the next begin
        ends = np.maximum(ends, t0 + stride * (ks_all[ks] + 1))
    stops = np.searchsorted(times, ends, side="left")
    # a span below the float spacing of the times (1e-7 s at 1.7e9): the events at begin
    stops = np.maximum(stops, np.searchsorted(times, begins[ks], side="right"))
    return [(int(k), int(a), int(b)) for k, a, b in zip(ks_all[ks], starts, stops, strict=True)
            if b - a >= min_events]


def _window_count(t0: float, t_last: float, span: float, stride: float) -> int:
    """Windows ``[t0 + k stride, + span)`` until one reaches ``t_last``."""
    n_win = int(np.floor(max(t_last - t0 - span, 0.0) / stride)) + 1
    if t0 + (n_win - 1) * stride + span <= t_last:
        n_win += 1
    return n_win


def _nonempty_candidates(times: np.ndarray, t0: float, span: float, stride: float,
                         n_win: int) -> np.ndarray:
    """Indices of the windows that may hold an event (a superset, one index of margin
    either side for rounding): a window of 1 ms over a year of events must not cost an
    array of 3e10 window starts."""
    rel = (times - t0) / stride
    hi = np.floor(rel).astype(np.int64) + 1
    lo = np.ceil(rel - span / stride).astype(np.int64) - 1
    lo, hi = np.clip(lo, 0, n_win - 1), np.clip(hi, 0, n_win - 1)
    counts = hi - lo + 1
    ks = np.repeat(lo, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts)
                                                                     - counts, counts))
    return np.unique(ks)


def owned_windows(times: np.ndarray, n_local: int, ctx: SeqContext,
                  cfg: EventWindow | None) -> list[tuple[int, int, int]]:
    """The windows whose first event is among ``times[:n_local]``.

    ``times`` holds the run's rows and then any rows read ahead from later parts;
    the caller reads ahead until :func:`rows_needed` is satisfied.
    """
    cfg = cfg or DEFAULT_WINDOW
    if cfg.events is not None:
        stride = int(cfg.stride) if cfg.stride else cfg.events
        return _count_owned(n_local, len(times), ctx, cfg.events, stride, cfg.min_events)
    assert cfg.seconds is not None
    return _time_owned(times, n_local, ctx, cfg.seconds, cfg.stride or cfg.seconds,
                       cfg.min_events)


def rows_needed(times: np.ndarray, n_local: int, ctx: SeqContext,
                cfg: EventWindow | None) -> tuple[int, float]:
    """What the owned windows need beyond the run: ``(rows, until)``: at least ``rows``
    rows in all, and every row before time ``until`` (``-inf``: none)."""
    cfg = cfg or DEFAULT_WINDOW
    if n_local == 0:
        return 0, -math.inf
    if cfg.events is not None:
        stride = int(cfg.stride) if cfg.stride else cfg.events
        total = ctx.total if ctx.total is not None else ctx.offset + n_local
        last_start = ((ctx.offset + n_local - 1) // stride) * stride
        last_k = max(0, math.ceil((total - cfg.events) / stride))
        last_start = min(last_start, last_k * stride)
        return min(last_start + cfg.events, total) - ctx.offset, -math.inf
    assert cfg.seconds is not None
    stride_s = cfg.stride or cfg.seconds
    t0 = float(times[0]) if ctx.t0 is None else ctx.t0
    k = math.floor((float(times[n_local - 1]) - t0) / stride_s) + 1  # +1: rounding margin
    return n_local, float(np.nextafter(t0 + k * stride_s + cfg.seconds, np.inf))


def may_own_a_window(n_local: int, t_local_last: float, ctx: SeqContext,
                     cfg: EventWindow | None) -> bool:
    """Whether a run of ``n_local`` rows (last time ``t_local_last``) that continues a
    sequence from earlier parts holds the first event of at least one window (before the
    ``min_events`` filter, which needs the rows themselves)."""
    cfg = cfg or DEFAULT_WINDOW
    if n_local == 0:
        return False
    if cfg.events is not None:
        stride = int(cfg.stride) if cfg.stride else cfg.events
        total = ctx.total if ctx.total is not None else ctx.offset + n_local
        last_k = max(0, math.ceil((total - cfg.events) / stride))
        return -(-ctx.offset // stride) <= min(last_k, (ctx.offset + n_local - 1) // stride)
    assert cfg.seconds is not None and ctx.t0 is not None and ctx.t_prev is not None
    stride_s = cfg.stride or cfg.seconds
    t_last = ctx.t_last if ctx.t_last is not None else t_local_last
    n_win = _window_count(ctx.t0, t_last, cfg.seconds, stride_s)
    # the first window that begins after t_prev: begins grow with k (not strictly, when the
    # stride is below the float spacing of the times), so bisect on k
    t0, lo, hi = ctx.t0, -1, n_win  # begin(lo) <= t_prev < begin(hi); begin(n_win) = +inf
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if t0 + stride_s * mid > ctx.t_prev:
            hi = mid
        else:
            lo = mid
    return hi < n_win and t0 + stride_s * hi <= t_local_last


def windows(times: np.ndarray, cfg: EventWindow | None) -> list[tuple[int, int, int]]:
    """The windows of one whole sorted sequence under ``cfg`` (None: 256 events, stride 128)."""
    return owned_windows(times, len(times), WHOLE, cfg)
