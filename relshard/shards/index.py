"""The index and rejects tables of a unit, and the unit description in the index footer.

``index/UNIT.parquet`` has one row per sample (:data:`INDEX_SCHEMA`); its
key-value metadata holds, under :data:`META_KEY`, a JSON :class:`UnitInfo`:
the shard path (relative to the root, or null for a unit without samples), its
sample count, bytes and sha256, and the unit's counts of written and rejected
inputs. Committing the index file commits the unit, so the manifest and
recovery read index footers only, never the shards.

``rejects/UNIT.parquet`` has one row per rejected input (:data:`REJECTS_SCHEMA`).
"""

from __future__ import annotations

import builtins
import json
from dataclasses import asdict, dataclass, fields
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from relshard.errors import ShardWriteError
from relshard.record import SCHEMA_VERSION
from relshard.shards.layout import OutputLayout, index_relpath
from relshard.shards.parquet_read import read_metadata, read_table

META_KEY = b"relshard.unit"
INDEX_FORMAT = 1

INDEX_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("input_key", pa.string()),
    ("uri", pa.string()),
    ("shard", pa.string()),
    ("offset", pa.int64()),
    ("size", pa.int64()),
    ("members", pa.list_(pa.string())),
    ("modality", pa.string()),
    ("n_frames", pa.int32()),
    ("n_subjects", pa.int32()),
    ("n_attributes", pa.int32()),
    ("n_relations", pa.int32()),
    ("caption_len", pa.int32()),
    ("rel_caption_len", pa.int32()),
    ("backend", pa.string()),
    ("model", pa.string()),
    ("prompt_version", pa.string()),
    ("sha256", pa.string()),
    ("schema_version", pa.int32()),
    ("n_subjects_model", pa.int32()),
    ("n_subjects_both", pa.int32()),
    ("leak", pa.string()),
])

# Columns added after the first index format: older index files lack them, and
# readers treat them as null (0 subjects found by the model, no leak recorded).
LATER_INDEX_COLUMNS = ("n_subjects_model", "n_subjects_both", "leak")
LEAK_FIXED_WARNING = "anonymization_leak_fixed"
LEAK_KEPT_WARNING = "anonymization_leak"

REJECTS_SCHEMA = pa.schema([
    ("input_key", pa.string()),
    ("uri", pa.string()),
    ("stage", pa.string()),
    ("reason", pa.string()),
    ("detail", pa.string()),
    ("raw_output", pa.string()),
    ("attempts", pa.int32()),
    ("retryable", pa.bool_()),
])
# Rejects columns added later: older rejects files lack them; ``retryable`` is then
# inferred from the reason (:func:`relshard.record.is_retryable_reason`).
LATER_REJECTS_COLUMNS = ("retryable",)


def record_columns(rec: dict[str, Any]) -> dict[str, Any]:
    """The index columns read off a record (plain data): subjects by source, leak status.

    ``leak`` is ``"fixed"`` when a re-ask removed a leak from the relational caption,
    ``"kept"`` when a leak was kept with a warning (``on_leak: keep``), else None.
    """
    sources = [s.get("source", "detector") for s in rec.get("subjects") or []]
    leak = None
    for w in rec.get("warnings") or []:
        head = str(w).split(":", 1)[0]
        if head == LEAK_FIXED_WARNING:
            leak = "fixed"
        elif head == LEAK_KEPT_WARNING:
            leak = "kept"
            break
    return {"n_subjects_model": sources.count("model"),
            "n_subjects_both": sources.count("both"), "leak": leak}


@dataclass(frozen=True)
class UnitInfo:
    """What one committed unit holds; also the JSON in its index footer."""

    name: str
    nsamples: int
    ninputs: int  # inputs written (their samples are in the shard)
    nrejects: int  # inputs rejected (rows of the rejects file)
    bytes: int  # size of the shard file; 0 without one
    sha256: str | None  # of the shard file; None without one
    shard: str | None = None  # 'shards/UNIT.tar', or None for a unit without samples
    rejects: str | None = None  # 'rejects/UNIT.parquet', or None without rejects

    def to_json(self) -> builtins.bytes:  # (`bytes` is a field here)
        data = asdict(self)
        data["format"] = INDEX_FORMAT
        data["schema_version"] = SCHEMA_VERSION
        return json.dumps(data, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, blob: builtins.bytes) -> UnitInfo:
        data = json.loads(blob)
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class CorruptIndexError(ShardWriteError):
    """An index file exists but is not a readable relshard index."""


class Columns:
    """Rows of a table collected column by column (cheap to append, cheap to convert)."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.data: dict[str, list[Any]] = {name: [] for name in schema.names}

    def append(self, row: dict[str, Any]) -> None:
        for name, column in self.data.items():
            column.append(row.get(name))

    def __len__(self) -> int:
        return len(self.data[self.schema.names[0]])

    def table(self, metadata: dict[bytes, bytes] | None = None) -> pa.Table:
        table = pa.Table.from_pydict(self.data, schema=self.schema)
        return table.replace_schema_metadata(metadata) if metadata else table


def write_table(table: pa.Table, sink: BinaryIO) -> None:
    """Write a parquet table to an open binary file (zstd, statistics on)."""
    pq.write_table(table, sink, compression="zstd")


def read_unit_info(layout: OutputLayout, unit: str) -> UnitInfo:
    """The :class:`UnitInfo` in the footer of ``index/UNIT.parquet``.

    Raises :class:`CorruptIndexError` when the file is not a relshard index (no
    parquet footer, no or malformed unit metadata). I/O errors pass through
    unchanged: a failed read says nothing about the file.
    """
    path = layout.path(index_relpath(unit))
    try:
        meta = read_metadata(layout.fs, path).metadata or {}
    except pa.ArrowInvalid as exc:
        raise CorruptIndexError(f"index file {path!r} is not parquet: {exc}") from None
    blob = meta.get(META_KEY)
    if blob is None:
        raise CorruptIndexError(f"index file {path!r} has no {META_KEY.decode()!r} metadata")
    try:
        return UnitInfo.from_json(blob)
    except (ValueError, TypeError) as exc:
        raise CorruptIndexError(f"index file {path!r} has malformed unit metadata: {exc}") from None


def read_column(layout: OutputLayout, relpath: str, column: str) -> list[Any]:
    """One column of a parquet file under the root, as a Python list."""
    table = read_table(layout.fs, layout.path(relpath), [column])
    values: list[Any] = table.column(column).to_pylist()
    return values
