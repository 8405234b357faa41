"""Assemble a gallery: pick samples through the index, read their byte ranges, render the page.

1. Index filters (``--where subjects>=3``) and a seeded random order pick a pool
   of index rows (:mod:`.select`): N rows, or ``scan`` rows when a filter needs
   the records, or a few times N with ``--compare`` (to find keys both runs have).
2. Record filters (``--where predicate=holds``) read only the ``KEY.json`` of
   those rows, in that random order, until N match or the pool (the scan cap)
   is used up; the page says how many were read.
3. The chosen samples are read by byte range (:mod:`.sample_reader`): the
   record, captions, up to ``max_frames`` frames, crops and event arrays; a
   clip's ``.mp4`` is never read.
4. The rejects ledger is summarized (:mod:`.rejects`) and the page rendered.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from relshard.report.gallery.card import FRAME_RE, ShownSample
from relshard.report.gallery.page import Gallery, page_html
from relshard.report.gallery.rejects import read_rejects
from relshard.report.gallery.sample_reader import read_sample
from relshard.report.gallery.select import find_keys, index_units, pick_rows
from relshard.report.gallery.where import Condition, match_record, parse_where
from relshard.report.tables import InspectError
from relshard.shards.layout import MANIFEST_NAME, REJECTS_DIR, OutputLayout

READERS = 8  # samples read at once (ranged reads are latency-bound on object stores)
CROP_RE = re.compile(r"^[a-z0-9_-]+\.(jpg|png)$")
WANTED = {"json", "txt", "rel.txt", "jpg", "times.npy", "types.npy"}
MAX_IMAGE_MEMBER = 8 * 2**20

Progress = Callable[[str, int], Callable[[int], None]]  # (task, total) -> advance(n)


class GalleryOptions(BaseModel):
    """What ``relshard show`` shows."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(default=48, ge=0, description="samples to show")
    seed: int = 0
    where: list[str] = Field(default_factory=list, description="FIELD OP VALUE filters, all hold")
    compare: str | None = Field(default=None, description="another output: same keys beside")
    scan: int = Field(default=2000, ge=1, description="records read at most for record filters")
    max_frames: int = Field(default=8, ge=1, description="frames of a clip shown")
    rejects: int = Field(default=30, ge=0, description="reject examples shown")
    per_reason: int = Field(default=6, ge=1)
    thumbnails: int = Field(default=24, ge=0, description="reject thumbnails made at most")


class GalleryResult(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    html: str
    shown: int
    total: int  # samples in the run
    matched: int  # samples passing the index filters
    scanned: int = 0  # records read for record filters
    scan_capped: bool = False
    rejects: int = 0
    message: str


def _quiet(_task: str, _total: int) -> Callable[[int], None]:
    return lambda _n: None


def want_member(max_frames: int) -> Callable[[str, int], bool]:
    def want(suffix: str, size: int) -> bool:
        if suffix in WANTED:
            return True
        m = FRAME_RE.match(suffix)
        if m:
            return int(m.group(1)) < max_frames and size <= MAX_IMAGE_MEMBER
        return bool(CROP_RE.match(suffix)) and size <= MAX_IMAGE_MEMBER
    return want


def open_output(root: str) -> OutputLayout:
    layout = OutputLayout.open(root)
    if not layout.fs.exists(layout.root):
        raise InspectError(f"Output {root!r} does not exist.")
    if not (index_units(layout) or layout.listdir(REJECTS_DIR) or layout.exists(MANIFEST_NAME)):
        raise InspectError(f"Output {root!r} has no index files (index/*.parquet) and no "
                           f"rejects; run `relshard verify {root} --repair` if it has shards.")
    return layout


def _shard_link(layout: OutputLayout, shard: str) -> tuple[str, str | None]:
    url = posixpath.join(layout.url.rstrip("/"), shard)
    href = Path(layout.path(shard)).resolve().as_uri() if layout.is_local else None
    return url, href


def _read_all(layout: OutputLayout, rows: list[dict[str, Any]], opts: GalleryOptions,
              advance: Callable[[int], None]) -> list[ShownSample]:
    want = want_member(opts.max_frames)

    def one(row: dict[str, Any]) -> ShownSample:
        data = read_sample(layout, row, want)
        url, href = _shard_link(layout, str(row["shard"]))
        advance(1)
        return ShownSample.parse(row, data, url, href)

    with ThreadPoolExecutor(READERS) as pool:
        return list(pool.map(one, rows))


def _filter_records(layout: OutputLayout, rows: list[dict[str, Any]], conds: list[Condition],
                    n: int, advance: Callable[[int], None]) -> tuple[list[dict[str, Any]], int]:
    """Rows whose record passes ``conds``, in order, until ``n``; and how many were read."""
    import json

    def matches(row: dict[str, Any]) -> bool:
        data = read_sample(layout, row, only={"json"})
        advance(1)
        try:
            record = json.loads(data.members.get("json", b""))
        except (ValueError, UnicodeDecodeError):
            return False
        return isinstance(record, dict) and match_record(record, conds)

    kept: list[dict[str, Any]] = []
    scanned = 0
    with ThreadPoolExecutor(READERS) as pool:
        for start in range(0, len(rows), 4 * READERS):
            batch = rows[start : start + 4 * READERS]
            for row, ok in zip(batch, pool.map(matches, batch), strict=True):
                scanned += 1
                if ok:
                    kept.append(row)
                    if len(kept) == n:
                        return kept, scanned
    return kept, scanned


def _run_name(layout: OutputLayout) -> str:
    import json

    try:
        with layout.fs.open(layout.path(MANIFEST_NAME), "rb") as f:
            return str(json.load(f).get("name") or "")
    except (OSError, ValueError, AttributeError):
        return ""


def build_gallery(root: str, opts: GalleryOptions, progress: Progress = _quiet) -> GalleryResult:
    """The gallery of ``root`` as HTML, and what it shows."""
    conds = [parse_where(w) for w in opts.where]
    record_conds = [c for c in conds if not c.on_index]
    layout = open_output(root)
    other = open_output(opts.compare) if opts.compare else None
    pool = opts.n
    if record_conds:
        pool = opts.scan
    elif other is not None:
        pool = max(4 * opts.n, opts.n + 50)
    picked = pick_rows(layout, conds, pool, opts.seed)
    rows, scanned, capped = picked.rows, 0, False
    if record_conds and rows:
        rows, scanned = _filter_records(layout, rows, record_conds, opts.n,
                                        progress("reading records to filter", len(rows)))
        capped = len(rows) < opts.n and scanned < picked.matched
    pairs: list[tuple[dict[str, Any], dict[str, Any] | None]]
    if other is not None:
        found = find_keys(other, {str(r["key"]) for r in rows})
        both = [r for r in rows if r["key"] in found]
        alone = [r for r in rows if r["key"] not in found]
        pairs = [(r, found[r["key"]]) for r in both[: opts.n]]
        pairs += [(r, None) for r in alone[: max(opts.n - len(pairs), 0)]]
    else:
        pairs = [(r, None) for r in rows[: opts.n]]
    mine_rows = [a for a, _ in pairs]
    theirs_rows = [b for _, b in pairs if b is not None]
    advance = progress("reading samples", len(mine_rows) + len(theirs_rows))
    mine = _read_all(layout, mine_rows, opts, advance)
    theirs = iter(_read_all(other, theirs_rows, opts, advance) if other is not None else [])
    shown = [(m, next(theirs) if b is not None else None) for m, (_, b) in zip(
        mine, pairs, strict=True)]
    rejects = read_rejects(layout, opts.rejects, opts.per_reason, opts.seed, opts.thumbnails)

    name = _run_name(layout)
    gallery = Gallery(title=f"relshard show: {root}", root=root, rejects=rejects)
    filt = f" matching {' and '.join(str(c) for c in conds)}" if conds else ""
    summary = (f"{len(shown)} of {picked.total:,} samples shown{filt} (seed {opts.seed})"
               + (f", run {name!r}" if name else "") + f"; {rejects.total:,} rejected inputs.")
    gallery.lines.append(summary)
    if conds and not record_conds:
        gallery.lines.append(f"{picked.matched:,} samples pass the index filters.")
    if record_conds:
        gallery.lines.append(f"{scanned:,} record(s) read to apply "
                             f"{' and '.join(str(c) for c in record_conds)}.")
        if capped:
            gallery.notes.append(
                f"Stopped after reading {scanned:,} records (the scan cap, --scan {opts.scan}): "
                f"only {len(shown)} of the {opts.n} requested matched; more may exist.")
    if other is not None:
        gallery.runs = (root, str(opts.compare))
        matched = sum(1 for _, b in shown if b is not None)
        gallery.lines.append(f"Compared with {opts.compare}: {matched} of {len(shown)} shown "
                             "keys exist in both runs, side by side.")
    if not shown:
        gallery.empty = (_empty_sentence(picked.total, rejects.total, conds, scanned)
                         if opts.n else "No samples requested (--n 0).")
    gallery.samples = shown
    message = gallery.empty or summary
    return GalleryResult(html=page_html(gallery), shown=len(shown), total=picked.total,
                         matched=picked.matched, scanned=scanned, scan_capped=capped,
                         rejects=rejects.total, message=message)


def _empty_sentence(total: int, rejected: int, conds: list[Condition], scanned: int) -> str:
    if total == 0 and rejected:
        return (f"This output has no samples: all {rejected:,} inputs were rejected "
                "(see the rejects below).")
    if total == 0:
        return "This output has no samples and no rejects."
    read = f" ({scanned:,} records read)" if scanned else ""
    return (f"No sample of {total:,} matches {' and '.join(str(c) for c in conds)}{read}."
            if conds else "No sample could be picked.")


def sample_strip(root: str, n: int = 8, seed: int = 0) -> list[ShownSample]:
    """A few random samples of ``root`` (for the stats report's strip)."""
    layout = open_output(root)
    rows = pick_rows(layout, [], n, seed).rows
    return _read_all(layout, rows, GalleryOptions(n=n, max_frames=1), lambda _n: None)


def paired_strip(root: str, other: str, n: int = 8, seed: int = 0
                 ) -> tuple[list[ShownSample], list[ShownSample]]:
    """Up to ``n`` random samples of ``root`` whose keys ``other`` also has, and ``other``'s
    samples of the same keys in the same order (``stats --html --compare``)."""
    layout, theirs_layout = open_output(root), open_output(other)
    rows = pick_rows(layout, [], max(4 * n, n + 50), seed).rows
    found = find_keys(theirs_layout, {str(r["key"]) for r in rows})
    both = [r for r in rows if r["key"] in found][:n]
    opts = GalleryOptions(n=max(n, 1), max_frames=1)
    mine = _read_all(layout, both, opts, lambda _n: None)
    theirs = _read_all(theirs_layout, [found[r["key"]] for r in both], opts, lambda _n: None)
    return mine, theirs
