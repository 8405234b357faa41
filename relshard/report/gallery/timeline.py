"""An inline SVG timeline of one event window: a row per event type, a tick per event.

The types come from ``KEY.types.npy`` (int64 ids into the log's vocabulary) and
the times from ``KEY.times.npy`` (float64 seconds), both loaded with
``allow_pickle=False``. Type ``t`` is subject ``S{t+1}`` of the record and its
name is the text of attribute ``A{t+1}`` (see
:mod:`relshard.events.describe`). Excitation edges (``excites``
relations) are drawn as arcs in a right margin, thicker for larger weights.
Rows with many events are drawn as a density strip instead of one tick each,
so a window of 100,000 events stays a small SVG.
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from relshard.events.describe import duration

LABEL_W, PLOT_W, ARC_W = 130, 470, 90
ROW_H, TOP, AXIS_H = 18, 6, 22
MAX_TICKS = 1500  # per row; above, a density strip of BINS bins
BINS = 235
MAX_ROWS = 24


@dataclass(frozen=True)
class Edge:
    source: int  # type id
    target: int
    weight: float
    confidence: float


def load_npy(data: bytes) -> np.ndarray | None:
    """A 1-d array from ``.npy`` bytes (never unpickled), or None when it is not one."""
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError):
        return None
    return arr if isinstance(arr, np.ndarray) and arr.ndim == 1 else None


def timeline_svg(times: np.ndarray, types: np.ndarray, names: dict[int, str],
                 color: Callable[[int], str], edges: list[Edge]) -> str:
    """The ``<svg>`` of a window; empty string when there is nothing to draw."""
    n = min(len(times), len(types))
    t = np.asarray(times[:n], dtype=np.float64)
    u = np.asarray(types[:n]).astype(np.int64, copy=False)
    ok = np.isfinite(t)
    t, u = t[ok], u[ok]
    if len(t) == 0:
        return ""
    t0, t1 = float(t.min()), float(t.max())
    span = t1 - t0 or 1.0
    present = [int(x) for x in np.unique(u)][:MAX_ROWS]
    row_of = {ty: i for i, ty in enumerate(present)}
    height = TOP + ROW_H * len(present) + AXIS_H
    width = LABEL_W + PLOT_W + ARC_W
    parts = [f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="events by type over time">']
    for ty in present:
        y = TOP + ROW_H * row_of[ty]
        name = names.get(ty, f"type {ty}")
        count = int(np.count_nonzero(u == ty))
        label = html.escape(f"S{ty + 1} {name}"[:22])
        parts.append(f'<text x="{LABEL_W - 6}" y="{y + ROW_H * 0.7:.1f}" text-anchor="end" '
                     f'font-size="11" fill="{color(ty)}"><title>'
                     f'{html.escape(f"S{ty + 1} {name}: {count} events")}</title>{label}</text>')
        xs = LABEL_W + (t[u == ty] - t0) / span * PLOT_W
        if len(xs) <= MAX_TICKS:
            d = "".join(f"M{x:.1f} {y + 3}v{ROW_H - 6}" for x in xs)
            parts.append(f'<path d="{d}" stroke="{color(ty)}" stroke-width="1" fill="none"/>')
        else:
            hist, _ = np.histogram(xs, bins=BINS, range=(LABEL_W, LABEL_W + PLOT_W))
            top = hist.max() or 1
            bw = PLOT_W / BINS
            parts.extend(
                f'<rect x="{LABEL_W + i * bw:.1f}" y="{y + 3}" width="{bw:.2f}" '
                f'height="{ROW_H - 6}" fill="{color(ty)}" '
                f'fill-opacity="{0.15 + 0.85 * c / top:.2f}"/>'
                for i, c in enumerate(hist) if c)
    axis_y = TOP + ROW_H * len(present) + 4
    parts.append(f'<path d="M{LABEL_W} {axis_y}h{PLOT_W}" stroke="#888" stroke-width="1"/>'
                 f'<text x="{LABEL_W}" y="{axis_y + 14}" font-size="10" fill="#555">+0 s</text>'
                 f'<text x="{LABEL_W + PLOT_W}" y="{axis_y + 14}" font-size="10" fill="#555" '
                 f'text-anchor="end">+{html.escape(duration(t1 - t0))}</text>')
    parts.extend(_arc(e, row_of, color) for e in edges if e.source in row_of and e.target in row_of)
    parts.append("</svg>")
    return "".join(parts)


def _arc(edge: Edge, row_of: dict[int, int], color: Callable[[int], str]) -> str:
    x0 = LABEL_W + PLOT_W + 8
    ys = TOP + ROW_H * row_of[edge.source] + ROW_H / 2
    yd = TOP + ROW_H * row_of[edge.target] + ROW_H / 2
    w = 1 + 4 * min(max(edge.weight, 0.0), 1.0)
    tip = html.escape(f"S{edge.source + 1} excites S{edge.target + 1}: weight "
                      f"{edge.weight:.3g}, confidence {edge.confidence:.2f}")
    if edge.source == edge.target:
        d = f"M{x0} {ys - 3}c22 -10 22 16 0 6"
    else:
        bulge = 14 + 5 * abs(row_of[edge.target] - row_of[edge.source])
        d = f"M{x0} {ys:.1f}C{x0 + bulge} {ys:.1f} {x0 + bulge} {yd:.1f} {x0 + 2} {yd:.1f}"
    return (f'<g class="edge"><title>{tip}</title><path d="{d}" stroke="{color(edge.source)}" '
            f'stroke-width="{w:.1f}" fill="none" stroke-opacity="0.8"/>'
            f'<circle cx="{x0 + 3}" cy="{yd:.1f}" r="3" fill="{color(edge.target)}"/></g>')
