"""Cut a sorted event sequence into windows (samples), by event count or by time span.

By count (``window.events = W``, ``stride = S``, default ``W``): windows start at
events ``0, S, 2S, ...``; the last window is the one that reaches the end (shorter
than ``W`` only when the whole sequence is), so the tail is never lost and no
window is a subset of the one before it.

By time (``window.seconds = D``, ``stride = S`` seconds, default ``D``): windows
cover ``[t0 + kS, t0 + kS + D)`` until a window reaches the last event; windows
with fewer than ``min_events`` events are skipped, but keep their index, so a
window's index always means the same time range.

Both return ``(index, start, stop)`` triples of positions, with stable indices.
"""

from __future__ import annotations

import numpy as np

from relshard.spec import EventWindow

DEFAULT_WINDOW = EventWindow(events=256, stride=128)


def count_windows(n: int, size: int, stride: int) -> list[tuple[int, int, int]]:
    if n == 0:
        return []
    out = []
    start, idx = 0, 0
    while True:
        stop = min(start + size, n)
        out.append((idx, start, stop))
        if stop >= n:
            return out
        start += stride
        idx += 1


def time_windows(times: np.ndarray, span: float, stride: float,
                 min_events: int) -> list[tuple[int, int, int]]:
    if len(times) == 0:
        return []
    t0, t_last = float(times[0]), float(times[-1])
    n_win = int(np.floor(max(t_last - t0 - span, 0.0) / stride)) + 1
    if t0 + (n_win - 1) * stride + span <= t_last:
        n_win += 1
    begins = t0 + stride * np.arange(n_win)
    starts = np.searchsorted(times, begins, side="left")
    stops = np.searchsorted(times, begins + span, side="left")
    stops[-1] = len(times) if begins[-1] + span > t_last else stops[-1]
    return [(i, int(a), int(b)) for i, (a, b) in enumerate(zip(starts, stops, strict=True))
            if b - a >= min_events]


def windows(times: np.ndarray, cfg: EventWindow | None) -> list[tuple[int, int, int]]:
    """The windows of one sorted sequence under ``cfg`` (None: 256 events, stride 128)."""
    cfg = cfg or DEFAULT_WINDOW
    if cfg.events is not None:
        stride = int(cfg.stride) if cfg.stride else cfg.events
        wins = count_windows(len(times), cfg.events, stride)
        return [w for w in wins if w[2] - w[1] >= cfg.min_events]
    assert cfg.seconds is not None
    return time_windows(times, cfg.seconds, cfg.stride or cfg.seconds, cfg.min_events)
