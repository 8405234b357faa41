"""Read a finished run for a benchmark: its index rows, and each sample's members once.

Samples are read through the index's byte ranges (``shard``, ``offset``,
``size``), in shard order, one sample in memory at a time; a sample's byte range
is a run of whole tar members, parsed by :mod:`relshard.shards.tarread`. :func:`scan_samples`
is the one pass over the media that a benchmark makes before writing its splits:
per sample it keeps only what the splitter and the benchmark card need (the
sequence and time span of an event window, predicates and attribute categories,
two 64-bit pHashes per stored frame).
"""

from __future__ import annotations

import io
import json
import posixpath
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from relshard.builders.phash import frame_phashes
from relshard.builders.splits import SampleRow
from relshard.errors import RelshardError
from relshard.shards.layout import OutputLayout, index_relpath
from relshard.shards.parquet_read import read_columns
from relshard.shards.tarread import CorruptSample, split_members

COLUMNS = ["key", "input_key", "uri", "sha256", "n_subjects", "shard", "offset", "size",
           "modality"]


class BenchmarkError(RelshardError):
    """A benchmark cannot be built from (or scored on) the given output."""


def read_index(layout: OutputLayout, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The index rows of every shard in the manifest, in manifest order."""
    rows: list[dict[str, Any]] = []
    for entry in manifest["shardlist"]:
        unit = posixpath.basename(entry["url"]).removesuffix(".tar")
        table = read_columns(layout.fs, layout.path(index_relpath(unit)), COLUMNS)
        for row in table.to_pylist():
            row.setdefault("input_key", row["key"])
            row["input_key"] = row["input_key"] or row["key"]
            rows.append(row)
    return rows


def parse_members(data: bytes) -> dict[str, bytes]:
    """A sample's tar bytes to ``{suffix: bytes}`` (the suffix is what follows the key's dot).

    Parsed by the shard format's one tar reader (:mod:`relshard.shards.tarread`);
    raises :class:`~relshard.shards.tarread.CorruptSample` on a bad span.
    """
    out: dict[str, bytes] = {}
    for name, value in split_members(data):
        base = posixpath.basename(name)
        if "." not in base:
            continue
        out[base.split(".", 1)[1]] = value
    return out


class SampleReader:
    """Reads samples by their index rows, keeping one open handle per shard."""

    def __init__(self, layout: OutputLayout) -> None:
        self.layout = layout
        self._handles: dict[str, Any] = {}

    def read(self, row: dict[str, Any]) -> dict[str, bytes]:
        src = self._handles.get(row["shard"])
        if src is None:
            if len(self._handles) >= 8:
                self.close()
            src = self._handles[row["shard"]] = self.layout.fs.open(
                self.layout.inside(row["shard"]), "rb")
        src.seek(row["offset"])
        data = src.read(row["size"])
        if len(data) != row["size"]:
            raise BenchmarkError(f"The shard {row['shard']} is shorter than its index says; "
                                 "run `relshard verify --repair` on the output first.")
        try:
            return parse_members(data)
        except CorruptSample as exc:
            raise BenchmarkError(f"Sample {row['key']} in {row['shard']} is not a readable tar "
                                 f"range ({exc}); run `relshard verify` on the output.") from None

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    def __enter__(self) -> SampleReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_frame(suffix: str) -> bool:
    """``jpg`` or ``fNNN.jpg``: a stored frame (not a subject crop ``s1.jpg``)."""
    if suffix == "jpg":
        return True
    stem, _, ext = suffix.partition(".")
    return ext == "jpg" and len(stem) > 1 and stem[0] == "f" and stem[1:].isdigit()


def load_npy(data: bytes | None) -> np.ndarray | None:
    if not data:
        return None
    try:
        arr: np.ndarray = np.load(io.BytesIO(data), allow_pickle=False)
        return arr
    except (ValueError, OSError):
        return None


@dataclass
class Scan:
    """What one pass over the samples found."""

    rows: list[SampleRow]
    frames: list[tuple[int, int, int]] = field(default_factory=list)  # sample, whole, centre
    frames_per_sample: dict[int, int] = field(default_factory=dict)
    flat_frames: int = 0
    predicates: list[tuple[str, ...]] = field(default_factory=list)  # per sample, interned
    categories: list[tuple[str, ...]] = field(default_factory=list)
    modalities: list[str] = field(default_factory=list)


def _span(record: dict[str, Any], members: dict[str, bytes]) -> tuple[float, float] | None:
    span = (record.get("source") or {}).get("time_span")
    if isinstance(span, list) and len(span) == 2:
        return float(span[0]), float(span[1])
    times = load_npy(members.get("times.npy"))
    if times is not None and times.size:
        return float(np.min(times)), float(np.max(times))
    return None


def scan_samples(layout: OutputLayout, index: list[dict[str, Any]],
                 hash_frames: bool = True) -> Scan:
    """Read every sample once (in index order) and keep what the split and the card need."""
    scan = Scan(rows=[])
    with SampleReader(layout) as reader:
        for n, row in enumerate(index):
            members = reader.read(row)
            try:
                record = json.loads(members.get("json", b"{}"))
            except ValueError:
                record = {}
            if not isinstance(record, dict):
                record = {}
            source = record.get("source") or {}
            modality = str(row.get("modality") or source.get("modality") or "")
            events = modality == "events"
            scan.rows.append(SampleRow(
                key=row["key"], uri=str(row["uri"] or ""), sha256=row.get("sha256"),
                n_subjects=int(row.get("n_subjects") or 0),
                sequence=str(source.get("sequence") or "") if events else None,
                span=_span(record, members) if events else None))
            scan.modalities.append(modality)
            scan.predicates.append(tuple(
                sys.intern(str(r.get("predicate"))) for r in record.get("relations") or []))
            scan.categories.append(tuple(
                sys.intern(str(a.get("category"))) for a in record.get("attributes") or []))
            if not hash_frames or events:
                continue
            hashed = 0
            for suffix in sorted(s for s in members if is_frame(s)):
                hashes = frame_phashes(members[suffix])
                if hashes is None:
                    scan.flat_frames += 1
                    continue
                scan.frames.append((n, *hashes))
                hashed += 1
            scan.frames_per_sample[n] = hashed
    return scan
