"""Open an output folder's index and rejects tables as dask dataframes (out of core).

An output root is a local path or any fsspec URL (``s3://bucket/run``). The
index (``index/*.parquet``) and rejects ledger (``rejects/*.parquet``) are read
lazily with :func:`dask.dataframe.read_parquet`, one partition per file (or row
group), so memory follows the partition size, never the index length. Columns added to the
index after its first format (``LATER_INDEX_COLUMNS``) are read file by file, null
where an older index file lacks them.

Temporary files of an interrupted write (``.NAME.tmp-*``) are ignored. Every
schema version a table or record claims is checked against
:data:`relshard.record.KNOWN_SCHEMA_VERSIONS`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from relshard.errors import MissingDependencyError, RelshardError
from relshard.record import KNOWN_SCHEMA_VERSIONS
from relshard.shards.index import INDEX_SCHEMA, LATER_INDEX_COLUMNS, REJECTS_SCHEMA
from relshard.shards.layout import (
    INDEX_DIR,
    MANIFEST_NAME,
    REJECTS_DIR,
    TABLE_EXT,
    OutputLayout,
    unit_of,
)

STATS_INDEX_COLUMNS = [
    "shard", "size", "modality", "n_frames", "n_subjects", "n_attributes", "n_relations",
    "caption_len", "rel_caption_len", "backend", "model", "prompt_version", "schema_version",
    *LATER_INDEX_COLUMNS,
]
REJECT_COLUMNS = ["stage", "reason"]


class InspectError(RelshardError):
    """An output folder cannot be inspected as it is (missing, empty, unreadable)."""


class UnknownSchemaVersion(InspectError):
    """Shards, an index or a record claim a schema version this relshard does not know."""

    def __init__(self, versions: list[int], where: str) -> None:
        super().__init__(versions, where)
        self.versions = versions
        self.where = where

    def __str__(self) -> str:
        known = ", ".join(str(v) for v in KNOWN_SCHEMA_VERSIONS)
        return (
            f"{self.where} uses schema version {', '.join(str(v) for v in self.versions)}, "
            f"which this relshard does not know (it reads {known}); upgrade relshard to read it."
        )


def check_versions(versions: list[Any], where: str) -> None:
    """Raise :class:`UnknownSchemaVersion` if any of ``versions`` is not known."""
    unknown = sorted({int(v) for v in versions if v is not None} - set(KNOWN_SCHEMA_VERSIONS))
    if unknown:
        raise UnknownSchemaVersion(unknown, where)


def require_dask() -> Any:
    """Import dask.dataframe, or raise the install hint."""
    try:
        import dask.dataframe as dd
    except ImportError:
        raise MissingDependencyError("dask", "stats") from None
    return dd


@dataclass(frozen=True)
class OutputTables:
    """The parquet files of an output root, and what its manifest says."""

    layout: OutputLayout
    index_files: list[str]  # full paths on layout.fs
    rejects_files: list[str]
    manifest: dict[str, Any] | None

    @classmethod
    def open(cls, root: str | OutputLayout, **storage_options: Any) -> OutputTables:
        """List the tables of ``root``; raise :class:`InspectError` when it holds none."""
        layout = OutputLayout.open(root, **storage_options)
        if not layout.fs.exists(layout.root):
            raise InspectError(f"Output {layout.url!r} does not exist.")
        index = _table_files(layout, INDEX_DIR)
        if not index:
            raise InspectError(
                f"Output {layout.url!r} has no index files (index/*.parquet); run "
                f"`relshard verify {layout.url} --repair` to rebuild them from the shards."
            )
        manifest = None
        if layout.exists(MANIFEST_NAME):
            try:
                with layout.fs.open(layout.path(MANIFEST_NAME), "rb") as f:
                    manifest = json.load(f)
            except ValueError as exc:
                raise InspectError(
                    f"{layout.url}/{MANIFEST_NAME} is not valid JSON: {exc}") from None
            check_versions([manifest.get("schema_version", 1)], f"{layout.url}/{MANIFEST_NAME}")
        return cls(layout, index, _table_files(layout, REJECTS_DIR), manifest)

    def _read(self, files: list[str], columns: list[str], schema: Any) -> Any:
        dd = require_dask()
        present = [c for c in columns if c in schema.names]
        if schema is INDEX_SCHEMA and set(present) & set(LATER_INDEX_COLUMNS):
            # older index files lack these columns: read file by file, null where absent
            reader = _FileReader(self.layout.fs, schema, present)
            return dd.from_map(reader, files, meta=reader.frame(None), divisions=None,
                               enforce_metadata=False)
        # dask hands pyarrow fsspec's Python file objects: without pre-buffering (and dask
        # reads without threads) pyarrow makes every read on the calling thread and keeps
        # none of them on its own threads, where dropping one after Python began to exit
        # aborts the process (see relshard.shards.parquet_read). A remote file's byte
        # ranges are fetched up front by fsspec instead (dask ignores that for local files).
        return dd.read_parquet(
            files, columns=present, filesystem=self.layout.fs, split_row_groups="adaptive",
            dtype_backend="pyarrow",
            read={"pre_buffer": False,
                  "open_file_options": {"precache_options": {"method": "parquet"}}},
        )

    def index(self, columns: list[str] | None = None) -> Any:
        """The index as a lazy dask dataframe of ``columns`` (default: what stats needs)."""
        return self._read(self.index_files, columns or STATS_INDEX_COLUMNS, INDEX_SCHEMA)

    def unreadable(self) -> InspectError | None:
        """The error naming the first index or rejects file whose parquet footer does not
        read (truncated or corrupt), or None when every footer reads."""
        import pyarrow as pa

        from relshard.shards.parquet_read import read_schema

        root = self.layout.url
        for path in [*self.index_files, *self.rejects_files]:
            try:
                read_schema(self.layout.fs, path)  # reads the footer
            except (pa.ArrowException, OSError, EOFError) as exc:
                name = path.rsplit("/", 1)[-1]
                folder = INDEX_DIR if path in self.index_files else REJECTS_DIR
                fix = (f"run `relshard verify {root} --repair` to rebuild it from the shards"
                       if folder == INDEX_DIR else
                       "restore it from a copy, or delete it to drop those reject rows")
                return InspectError(f"{root}/{folder}/{name} is truncated or corrupt (not a "
                                    f"readable parquet file: {type(exc).__name__}); {fix}.")
        return None

    def rejects(self, columns: list[str] | None = None) -> Any | None:
        """The rejects ledger as a lazy dask dataframe, or None when nothing was rejected."""
        if not self.rejects_files:
            return None
        return self._read(self.rejects_files, columns or REJECT_COLUMNS, REJECTS_SCHEMA)


class _FileReader:
    """One index file as a pandas frame of ``columns``; columns the file lacks are null.

    The dtypes are those :func:`dask.dataframe.read_parquet` gives with the pyarrow
    dtype backend (strings as ``string[pyarrow]``, the rest as Arrow dtypes).
    """

    def __init__(self, fs: Any, schema: Any, columns: list[str]) -> None:
        self.fs = fs
        self.schema = schema
        self.columns = columns

    def __call__(self, path: str) -> Any:
        from relshard.shards.parquet_read import parquet_file

        with parquet_file(self.fs, path) as pfile:
            have = [c for c in self.columns if c in pfile.schema_arrow.names]
            table = pfile.read(columns=have)
        return self.frame(table)

    def frame(self, table: Any | None) -> Any:
        import pandas as pd
        import pyarrow as pa

        fields = [self.schema.field(c) for c in self.columns]
        arrays = []
        for f in fields:
            if table is None:
                arrays.append(pa.array([], f.type))
            elif f.name in table.column_names:
                arrays.append(table.column(f.name).cast(f.type))
            else:
                arrays.append(pa.nulls(table.num_rows, f.type))
        full = pa.Table.from_arrays(arrays, schema=pa.schema(fields))

        def dtype(t: Any) -> Any:
            return pd.StringDtype("pyarrow") if t in (pa.string(), pa.large_string()) \
                else pd.ArrowDtype(t)
        return full.to_pandas(types_mapper=dtype)


def _table_files(layout: OutputLayout, sub: str) -> list[str]:
    names = [b for b in layout.listdir(sub) if unit_of(b, TABLE_EXT) is not None]
    return [layout.path(f"{sub}/{b}") for b in names]
