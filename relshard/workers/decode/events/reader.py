"""Stream an event log in bounded Arrow batches: CSV (plain, .gz, .zip), JSON Lines, Parquet.

Only the columns the spec names are read. CSV columns are read as strings, so a
value in row nine million that does not match the type Arrow guessed from the first
block cannot fail the whole file; typing happens per batch, and a bad value becomes a
reject row, not an error. JSON Lines are read in chunks of lines, each parsed by
Arrow on its own. Memory is a few batches, however long the log.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from relshard.errors import SpecError
from relshard.spec import EventColumns

BATCH_ROWS = 262_144
# 1 MiB CSV blocks keep the driver's pre-pass flat: measured peak 300 MB at 2M rows and
# 297 MB at 12M rows, where 16 MiB blocks grew 393 -> 711 MB (the reader's buffers are
# retained by the allocator); the pre-pass is ~25% slower for it.
_BLOCK_BYTES = 1 << 20
_JSON_CHUNK_BYTES = 1 << 24


class UnreadableLog(Exception):
    """A log that is corrupt or not in its format: the input is rejected, the run goes on."""


def log_format(uri: str, declared: str = "auto") -> str:
    """``csv``, ``jsonl`` or ``parquet`` for a path (compression suffixes allowed)."""
    if declared != "auto":
        return declared
    name = uri.lower().split("?", 1)[0]
    for suffix in (".gz", ".bz2", ".xz", ".zst", ".zip"):
        name = name.removesuffix(suffix)
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".csv", ".tsv", ".txt")) or uri.lower().endswith(".zip"):
        return "csv"
    raise SpecError(f"Event log {uri!r} has no known extension; set sources[].events.format "
                    "to csv, jsonl or parquet.")


def wanted_columns(cols: EventColumns) -> list[str]:
    names = [cols.time, cols.type, *([cols.sequence] if cols.sequence else []), *cols.marks]
    return list(dict.fromkeys(names))


@contextmanager
def _open(uri: str) -> Iterator[IO[bytes]]:
    """Open (and decompress) a log; a .zip must hold exactly one non-hidden file."""
    if uri.lower().endswith(".zip"):
        with fsspec.open(uri, "rb") as raw, zipfile.ZipFile(raw) as zf:
            names = [n for n in zf.namelist()
                     if not n.endswith("/") and not n.rsplit("/", 1)[-1].startswith((".", "__"))]
            if len(names) != 1:
                raise SpecError(f"Zip {uri!r} holds {len(names)} files; an event-log zip must "
                                "hold exactly one.")
            with zf.open(names[0]) as fh:
                yield fh
        return
    with fsspec.open(uri, "rb", compression="infer") as fh:
        yield fh


def _check_columns(uri: str, present: list[str], wanted: list[str]) -> None:
    missing = [c for c in wanted if c not in present]
    if missing:
        raise SpecError(f"Event log {uri!r} has no column(s) {missing} (it has {present[:20]}); "
                        "fix sources[].events.")


def _csv_batches(fh: IO[bytes], uri: str, wanted: list[str]) -> Iterator[pa.RecordBatch]:
    delimiter = "\t" if ".tsv" in uri.lower() else ","
    try:
        reader = pacsv.open_csv(
            fh,
            read_options=pacsv.ReadOptions(block_size=_BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(
                include_columns=wanted, column_types={c: pa.string() for c in wanted},
                include_missing_columns=False, strings_can_be_null=True,
                quoted_strings_can_be_null=True),
        )
    except pa.ArrowKeyError:  # a named column is not in the header
        raise SpecError(f"Event log {uri!r} has no column(s) named in sources[].events "
                        f"({wanted}); fix sources[].events to match its header.") from None
    _check_columns(uri, reader.schema.names, wanted)
    yield from reader


def _jsonl_batches(fh: IO[bytes], uri: str, wanted: list[str]) -> Iterator[pa.RecordBatch]:
    buf = io.BufferedReader(fh) if not isinstance(fh, io.BufferedIOBase) else fh
    checked = False
    while True:
        chunk = buf.read(_JSON_CHUNK_BYTES)
        if not chunk:
            break
        tail = buf.readline()
        chunk += tail
        table = pajson.read_json(io.BytesIO(chunk))
        if not checked:
            _check_columns(uri, table.column_names, wanted)
            checked = True
        cols = {c: table.column(c) if c in table.column_names
                else pa.nulls(table.num_rows, pa.string()) for c in wanted}
        yield from pa.table(cols).to_batches(max_chunksize=BATCH_ROWS)


def _parquet_batches(fh: IO[bytes], uri: str, wanted: list[str]) -> Iterator[pa.RecordBatch]:
    pf = pq.ParquetFile(fh)
    _check_columns(uri, pf.schema_arrow.names, wanted)
    yield from pf.iter_batches(batch_size=BATCH_ROWS, columns=wanted)


def iter_batches(uri: str, cols: EventColumns) -> Iterator[pa.RecordBatch]:
    """Record batches of the wanted columns, in file order."""
    fmt = log_format(uri, cols.format)
    wanted = wanted_columns(cols)
    readers: dict[str, Any] = {"csv": _csv_batches, "jsonl": _jsonl_batches,
                               "parquet": _parquet_batches}
    try:
        opened = _open(uri)
        fh = opened.__enter__()
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise UnreadableLog(f"cannot be opened: {str(exc)[:300]}") from None
    try:
        yield from readers[fmt](fh, uri, wanted)
    except (pa.ArrowInvalid, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise UnreadableLog(f"cannot be read as {fmt}: {str(exc)[:300]}") from None
    finally:
        opened.__exit__(None, None, None)
