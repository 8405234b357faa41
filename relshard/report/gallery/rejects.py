"""The rejects of a run for the gallery: counts by stage and reason, a few examples of each.

Counting reads only the ``stage`` and ``reason`` columns of ``rejects/*.parquet``;
examples (seeded, at most ``per_reason`` of each reason and ``limit`` in all) are
read whole afterwards, from the files that hold them only. Where an example's
URI is a local image that still exists, a small thumbnail is made with Pillow
(size, pixel-count and time caps; any failure simply means no thumbnail).
"""

from __future__ import annotations

import base64
import io
import os
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np

from relshard.report.gallery.select import read_columns
from relshard.shards.layout import REJECTS_DIR, TABLE_EXT, OutputLayout, is_local, unit_of

REJECT_COLUMNS = ["input_key", "uri", "stage", "reason", "detail", "raw_output"]
THUMB_SIDE = 160
MAX_THUMB_FILE = 64 * 2**20  # bytes of an input we are willing to open for a thumbnail
MAX_THUMB_PIXELS = 64_000_000
THUMB_BUDGET_S = 5.0  # all thumbnails together


@dataclass
class RejectExample:
    row: dict[str, Any]
    thumbnail: str | None = None  # a data: URI


@dataclass
class RejectsSummary:
    total: int = 0
    by_reason: Counter[tuple[str, str]] = field(default_factory=Counter)  # (stage, reason)
    examples: dict[tuple[str, str], list[RejectExample]] = field(default_factory=dict)
    thumbnails_skipped: int = 0  # over the count or time cap


def _files(layout: OutputLayout) -> list[str]:
    return [f"{REJECTS_DIR}/{b}" for b in layout.listdir(REJECTS_DIR)
            if unit_of(b, TABLE_EXT) is not None]


def read_rejects(layout: OutputLayout, limit: int, per_reason: int, seed: int,
                 thumbnails: int) -> RejectsSummary:
    """Counts of every reject reason and up to ``limit`` examples (``thumbnails`` at most)."""
    summary = RejectsSummary()
    files = _files(layout)
    chosen: dict[tuple[str, str], list[tuple[float, int, int]]] = defaultdict(list)
    for file_no, relpath in enumerate(files):
        table = read_columns(layout, relpath, ["stage", "reason"])
        stages = table.column("stage").to_pylist()
        reasons = table.column("reason").to_pylist()
        prio = np.random.default_rng([seed, file_no]).random(len(stages))
        for row, (stage, reason) in enumerate(zip(stages, reasons, strict=True)):
            group = (str(stage), str(reason))
            summary.by_reason[group] += 1
            bucket = chosen[group]
            bucket.append((float(prio[row]), file_no, row))
            if len(bucket) > 4 * per_reason:
                bucket.sort()
                del bucket[per_reason:]
        summary.total += len(stages)
    picks: list[tuple[tuple[str, str], int, int]] = []
    for group, _count in summary.by_reason.most_common():
        picks.extend((group, f, r) for _p, f, r in sorted(chosen[group])[:per_reason])
    picks = picks[: max(limit, 0)]
    by_file: dict[int, list[int]] = defaultdict(list)
    for _g, f, r in picks:
        by_file[f].append(r)
    rows: dict[tuple[int, int], dict[str, Any]] = {}
    for f, wanted in by_file.items():
        table = read_columns(layout, files[f], REJECT_COLUMNS)
        valid = [r for r in wanted if r < table.num_rows]
        rows.update(zip(((f, r) for r in valid), table.take(valid).to_pylist(), strict=True))
    deadline = time.monotonic() + THUMB_BUDGET_S
    made = 0
    for group, f, r in picks:
        if (f, r) not in rows:
            continue
        example = RejectExample(rows[(f, r)])
        if made < thumbnails and time.monotonic() < deadline:
            example.thumbnail = thumbnail(str(example.row.get("uri") or ""))
            made += example.thumbnail is not None
        elif local_path(str(example.row.get("uri") or "")) is not None:
            summary.thumbnails_skipped += 1
        summary.examples.setdefault(group, []).append(example)
    return summary


def local_path(uri: str) -> str | None:
    """The local file a URI names (``file://`` or a plain path), when it is a regular file."""
    if not uri:
        return None
    if not is_local(uri):
        return None
    parsed = urlparse(uri)
    path = unquote(parsed.path) if parsed.scheme == "file" else uri
    try:
        return path if os.path.isfile(path) else None
    except (OSError, ValueError):
        return None


def thumbnail(uri: str, side: int = THUMB_SIDE) -> str | None:
    """A small JPEG ``data:`` URI of a local image input, or None (never raises)."""
    path = local_path(uri)
    if path is None:
        return None
    try:
        from PIL import Image, ImageOps

        if os.path.getsize(path) > MAX_THUMB_FILE:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > MAX_THUMB_PIXELS:
                    return None
                im.draft("RGB", (side * 2, side * 2))
                small = ImageOps.exif_transpose(im)
                small = small.convert("RGB")
                small.thumbnail((side, side))
                buf = io.BytesIO()
                small.save(buf, format="JPEG", quality=80)
    except Exception:  # noqa: BLE001 - a reject's input is broken by definition
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
