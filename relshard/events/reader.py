"""Stream an event log in bounded Arrow batches: CSV (plain, .gz, .zip), JSON Lines, Parquet.

Only the columns the spec names are read. CSV columns are read as strings, so a
value in row nine million that does not match the type Arrow guessed from the first
block cannot fail the whole file; typing happens per batch, and a bad value becomes a
reject row, not an error. JSON Lines are read in chunks of lines, each parsed by
Arrow on its own; nested objects are flattened, so ``type: event.kind`` names a field
inside one. Memory is a few batches, however long the log.

Broken lines do not cost the log: a CSV line with the wrong number of fields or
bytes that are not UTF-8, or a JSON line that does not parse or is not an object,
becomes a ``malformed`` row (rejected with its row number and text) and reading goes
on. Arrow's fast readers stop at the first such line, so from there the reader
switches to a careful path: it splits the rest into lines itself, parses chunks of
lines with Arrow, and matches what Arrow refused back to line numbers (only logs
that have a broken line pay for it). Row numbers count the non-empty data lines
(the header excluded), which is what Arrow counts, on both paths.

Arrow is never handed a Python object (a Python or fsspec file object, ``io.BytesIO``):
its CSV and JSON readers read one from their own I/O threads, and dropping it there
after Python began to exit aborts the process (``relshard.shards.parquet_read`` says
why). A plain or ``.gz``/``.bz2`` log on the local disk is opened (and decompressed) by
Arrow itself; any other log is read here, in Python, and Arrow parses copies of what
was read in memory of its own (:class:`CsvBlocks`, :func:`_arrow_reader`).
"""

from __future__ import annotations

import copy
import io
import json
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any, cast

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
from fsspec.utils import infer_compression

from relshard.errors import SpecError
from relshard.shards.layout import is_local
from relshard.shards.parquet_read import (
    arrow_buffer,
    local_file,
    native_input,
    stream_batches,
)
from relshard.spec import EventColumns

BATCH_ROWS = 262_144
# 1 MiB CSV blocks keep the driver's pre-pass flat: measured peak 300 MB at 2M rows and
# 297 MB at 12M rows, where 16 MiB blocks grew 393 -> 711 MB (the reader's buffers are
# retained by the allocator); the pre-pass is ~25% slower for it.
_BLOCK_BYTES = 1 << 20
_JSON_CHUNK_BYTES = 1 << 24
_CAREFUL_CHUNK_BYTES = 1 << 20
# A data line longer than this is a malformed row of its own (a 50 MB line once made
# Arrow refuse the rest of the log); the rows after it are read as usual.
MAX_LINE_BYTES = 1 << 20
_NESTED = (pa.types.is_list, pa.types.is_large_list, pa.types.is_struct, pa.types.is_map,
           pa.types.is_fixed_size_list)


@dataclass
class LogBatch:
    """Rows read from a log: ``batch`` (the wanted columns, as read), ``rows`` their 0-based
    data-row numbers, ``malformed`` the lines among them that could not be read."""

    batch: pa.RecordBatch
    rows: np.ndarray
    malformed: list[tuple[int, str]] = field(default_factory=list)  # (row, why)


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


def _arrow_reader(data: bytes) -> pa.BufferReader:
    """``data`` for an Arrow reader: a copy in memory that Arrow owns (``io.BytesIO`` or
    ``pa.BufferReader(data)`` would hand it a Python object)."""
    return pa.BufferReader(arrow_buffer(data))


class CsvBlocks:
    """``pacsv.open_csv`` over a Python file object, which Arrow is not handed.

    Arrow's CSV readers read a Python file object from their I/O threads whatever
    ``use_threads`` says (measured with pyarrow 26; see the module doc for why that
    must not be), so ``fh`` is read here, on the calling thread, in blocks of whole
    lines of about ``block_bytes``, and ``pacsv.read_csv`` parses an Arrow-owned copy
    of each, the header line in front. It behaves as ``open_csv`` does: :attr:`schema`
    is known, and the errors of the header and of the first block are raised, on
    construction; the types Arrow infers from the first block hold for the rest (a
    later value that does not fit is an ``ArrowInvalid``); a line longer than
    ``block_bytes`` is an ``ArrowInvalid``; iterating gives record batches. A newline
    ends a row, so ``parse`` must not allow newlines in values.
    """

    def __init__(self, fh: IO[bytes], block_bytes: int, parse: Any, convert: Any) -> None:
        if parse.newlines_in_values:
            raise ValueError("CsvBlocks splits rows at newlines")
        self._fh, self._block_bytes, self._parse = fh, block_bytes, parse
        self._pending: list[bytes] = []
        self._done = False
        first = self._lines()
        # the first line that is not empty (Arrow skips empty lines), for the later blocks
        self._header = first.lstrip(b"\r\n").partition(b"\n")[0].rstrip(b"\r") + b"\n"
        self._convert = convert
        self._first = self._parse_block(first)  # as Arrow reads it: header included
        self.schema: pa.Schema = self._first.schema
        # the rest is converted to the types of the first block, as open_csv does
        self._convert = copy.copy(convert)
        self._convert.column_types = {**{f.name: f.type for f in self.schema},
                                      **convert.column_types}

    def _read(self) -> bytes:
        """``block_bytes`` of the file, fewer only at its end."""
        parts: list[bytes] = []
        size = 0
        while size < self._block_bytes:
            part = self._fh.read(self._block_bytes - size)
            if not part:
                break
            parts.append(part)
            size += len(part)
        return b"".join(parts)

    def _lines(self) -> bytes:
        """The next whole lines (all that is left at the end; b"" after it)."""
        while not self._done:
            block = self._read()
            if len(block) < self._block_bytes:  # the end: a last line without a newline
                self._done = True               # goes with the lines before it
                self._pending.append(block)
                break
            cut = block.rfind(b"\n") + 1
            if cut:
                data = b"".join([*self._pending, block[:cut]])
                self._pending = [block[cut:]]
                return data
            self._pending.append(block)
        data = b"".join(self._pending)
        self._pending = []
        return data

    def _parse_block(self, data: bytes) -> pa.Table:
        return pacsv.read_csv(
            _arrow_reader(data),
            read_options=pacsv.ReadOptions(use_threads=False, block_size=self._block_bytes),
            parse_options=self._parse, convert_options=self._convert)

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        yield from self._first.to_batches()
        while data := self._lines():
            yield from self._parse_block(self._header + data).to_batches()


def csv_batches(source: pa.NativeFile | IO[bytes], block_bytes: int, parse: Any,
                convert: Any) -> pacsv.CSVStreamingReader | CsvBlocks:
    """A reader of a CSV source's record batches (with its ``schema``): pyarrow's own
    file is streamed by ``open_csv``, a Python file object is read here and Arrow parses
    copies (:class:`CsvBlocks`)."""
    if isinstance(source, pa.NativeFile):
        return pacsv.open_csv(source, read_options=pacsv.ReadOptions(block_size=block_bytes),
                              parse_options=parse, convert_options=convert)
    return CsvBlocks(source, block_bytes, parse, convert)


@contextmanager
def _csv_source(uri: str) -> Iterator[pa.NativeFile | IO[bytes]]:
    """A CSV log as pyarrow's own file where it can be (a plain, .gz or .bz2 local file),
    else as :func:`_opened` gives it (for :class:`CsvBlocks`)."""
    if is_local(uri):
        try:
            fs, path = fsspec.core.url_to_fs(uri)
            native = None if uri.lower().endswith(".zip") else native_input(fs, path)
        except OSError as exc:
            raise UnreadableLog(f"cannot be opened: {str(exc)[:300]}") from None
        if native is not None:
            with native:
                yield native
            return
    with _opened(uri) as fh:
        yield fh


def _check_columns(uri: str, present: list[str], wanted: list[str]) -> None:
    missing = [c for c in wanted if c not in present]
    if missing:
        raise SpecError(f"Event log {uri!r} has no column(s) {missing} (it has {present[:20]}); "
                        "fix sources[].events.")


_DELIMITERS = (",", "\t", ";", "|")


def sniff_delimiter(uri: str, wanted: list[str]) -> str:
    """The delimiter under which the header line names the most wanted columns (``,`` on a
    tie, tab for ``.tsv``): logs exported with ``;`` or tabs read without a setting."""
    default = "\t" if ".tsv" in uri.lower() else ","
    try:
        with _opened(uri) as fh:
            head = fh.readline(1 << 16).decode("utf-8", "replace").lstrip("\ufeff").strip()
    except (UnreadableLog, EOFError, OSError, zipfile.BadZipFile):
        return default  # reading the log itself will say what is wrong with it

    def score(d: str) -> int:
        return len(set(wanted) & {f.strip().strip('"') for f in head.split(d)})

    best = max(_DELIMITERS, key=lambda d: (score(d), d == default))
    return best if score(best) > score(default) else default


def _csv_options(wanted: list[str], delimiter: str, column_type: pa.DataType = pa.string(),
                 on_invalid: Any = None) -> tuple[Any, Any]:
    parse = pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=False,
                               invalid_row_handler=on_invalid)
    convert = pacsv.ConvertOptions(
        include_columns=wanted, column_types={c: column_type for c in wanted},
        include_missing_columns=False, strings_can_be_null=True, quoted_strings_can_be_null=True)
    return parse, convert


class _Counter:
    """Numbers the rows of the fast path."""

    def __init__(self) -> None:
        self.next = 0

    def take(self, n: int) -> np.ndarray:
        rows = np.arange(self.next, self.next + n, dtype=np.int64)
        self.next += n
        return rows


def _csv_batches(uri: str, wanted: list[str], delimiter: str) -> Iterator[LogBatch]:
    count = _Counter()
    with _csv_source(uri) as source:
        parse, convert = _csv_options(wanted, delimiter)
        try:
            reader = csv_batches(source, _BLOCK_BYTES, parse, convert)
        except pa.ArrowKeyError:  # a named column is not in the header
            raise SpecError(f"Event log {uri!r} has no column(s) named in sources[].events "
                            f"({wanted}); fix sources[].events to match its header.") from None
        except (pa.ArrowInvalid, EOFError, OSError):  # a broken line or a cut in block one
            reader = None
        if reader is not None:
            _check_columns(uri, reader.schema.names, wanted)
            try:
                for batch in reader:
                    yield LogBatch(batch, count.take(batch.num_rows))
                return
            except (pa.ArrowInvalid, EOFError, OSError):
                # a broken line, or a stream that breaks off (Arrow reads ahead, so the
                # rows before the break may not have come out yet): go on carefully from
                # the first row not yet read; it reads up to the break, then says why
                pass
    yield from _csv_careful(uri, wanted, delimiter, skip=count.next)


def _data_lines(fh: IO[bytes], skip_header: bool) -> Iterator[tuple[bytes | None, list[bytes]]]:
    """(header, a chunk of complete non-empty lines) in order; the header comes first."""
    header: bytes | None = None
    rest = b""
    while True:
        block = fh.read(_CAREFUL_CHUNK_BYTES)
        data = rest + block
        if not block:
            cut = len(data)
        else:
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                rest = data
                continue
        rest = data[cut:]
        lines = [ln.rstrip(b"\r") for ln in data[:cut].split(b"\n")]
        lines = [ln for ln in lines if ln]
        if skip_header and header is None and lines:
            header, lines = lines[0], lines[1:]
        if lines:
            yield header, lines
        if not block:
            return


def _csv_careful(uri: str, wanted: list[str], delimiter: str,
                 skip: int) -> Iterator[LogBatch]:
    row = 0
    with _opened(uri) as fh:
        for header, lines in _data_lines(fh, skip_header=True):
            if row + len(lines) <= skip:
                row += len(lines)
                continue
            drop = max(0, skip - row)
            row += drop
            yield _csv_chunk(uri, wanted, delimiter, header or b"", lines[drop:], row)
            row += len(lines) - drop


def _csv_chunk(uri: str, wanted: list[str], delimiter: str, header: bytes,
               lines: list[bytes], first: int) -> LogBatch:
    """Parse ``lines`` (rows ``first``...) with Arrow; what it refuses becomes malformed."""
    long_at = [k for k, ln in enumerate(lines) if len(ln) > MAX_LINE_BYTES]
    if long_at:  # Arrow cannot parse them, and they are no plausible event: rejects
        batch = _csv_chunk(uri, wanted, delimiter, header,
                           [ln for ln in lines if len(ln) <= MAX_LINE_BYTES], 0)
        kept = [first + k for k, ln in enumerate(lines) if len(ln) <= MAX_LINE_BYTES]
        cut = [(kept[r], why) for r, why in batch.malformed]
        cut += [(first + k, f"is a line of {len(lines[k]):,} bytes, over the "
                 f"{MAX_LINE_BYTES:,}-byte limit of one event") for k in long_at]
        rows = np.array([kept[r] for r in batch.rows], dtype=np.int64)
        return LogBatch(batch.batch, rows, sorted(cut))
    refused: list[str] = []

    def on_invalid(bad: Any) -> str:
        refused.append(bad.text)
        return "skip"

    parse, convert = _csv_options(wanted, delimiter, pa.binary(), on_invalid)
    table = pacsv.read_csv(_arrow_reader(header + b"\n" + b"\n".join(lines) + b"\n"),
                           read_options=pacsv.ReadOptions(
                               use_threads=False, block_size=4 * MAX_LINE_BYTES + len(header)),
                           parse_options=parse, convert_options=convert)
    _check_columns(uri, table.column_names, wanted)
    malformed: list[tuple[int, str]] = []
    bad_at: set[int] = set()
    i = 0
    for text in refused:  # Arrow refuses lines in order: find each one's position
        while i < len(lines) and lines[i].decode("utf-8", "replace") != text:
            i += 1
        if i == len(lines):
            raise UnreadableLog("could not match a malformed line to its position")
        fields = len(text.split(parse.delimiter))
        malformed.append((first + i, f"has {fields} fields where the header has "
                          f"{len(header.split(parse.delimiter.encode()))}: {text[:80]!r}"))
        bad_at.add(i)
        i += 1
    rows = np.array([first + k for k in range(len(lines)) if k not in bad_at], dtype=np.int64)
    if len(rows) != table.num_rows:
        raise UnreadableLog("lines and parsed rows do not line up")
    return _utf8_rows(table.select(wanted), rows, malformed)


def _utf8_rows(table: pa.Table, rows: np.ndarray,
               malformed: list[tuple[int, str]]) -> LogBatch:
    """Cast binary columns to strings; rows with bytes that are not UTF-8 become malformed."""
    ok = np.ones(table.num_rows, dtype=bool)
    cols = []
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        try:
            cols.append(pc.cast(col, pa.string()))
            continue
        except pa.ArrowInvalid:
            pass
        values = []
        for k, v in enumerate(col.to_pylist()):
            try:
                values.append(None if v is None else v.decode("utf-8"))
            except UnicodeDecodeError:
                values.append(None)
                if ok[k]:
                    malformed.append((int(rows[k]), f"column {name!r} is not UTF-8 text: "
                                      f"{v[:40]!r}"))
                ok[k] = False
        cols.append(pa.array(values, pa.string()))
    out = pa.table(cols, names=table.column_names).filter(pa.array(ok))
    malformed.sort()
    return LogBatch(_one_batch(out), rows[ok], malformed)


def _one_batch(table: pa.Table) -> pa.RecordBatch:
    """A table as one record batch (an empty one when it has no rows)."""
    batches = table.combine_chunks().to_batches()
    return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=table.schema)


def _jsonl_batches(uri: str, wanted: list[str]) -> Iterator[LogBatch]:
    checked = False
    row = 0
    with _opened(uri) as fh:
        buf = (io.BufferedReader(cast(io.RawIOBase, fh))  # a file object with read/readinto
               if not isinstance(fh, io.BufferedIOBase) else fh)
        while True:
            chunk = buf.read(_JSON_CHUNK_BYTES)
            if not chunk:
                break
            chunk += buf.readline()
            try:
                table = pajson.read_json(_arrow_reader(chunk))
                table.validate(full=True)  # strings that are not UTF-8 pass read_json
                while any(pa.types.is_struct(f.type) for f in table.schema):
                    table = table.flatten()  # nested objects: columns named "event.type"
                if any(any(is_(table.schema.field(c).type) for is_ in _NESTED)
                       for c in wanted if c in table.column_names):
                    raise pa.ArrowInvalid("a wanted field holds an array or object")
            except pa.ArrowInvalid:
                out = _jsonl_careful(chunk, wanted, row)
                row = out.rows[-1] + 1 if len(out.rows) else row
                row = max([row, *(r + 1 for r, _ in out.malformed)])
                yield out
                continue
            if not checked:
                _check_columns(uri, table.column_names, wanted)
                checked = True
            cols = {c: table.column(c) if c in table.column_names
                    else pa.nulls(table.num_rows, pa.string()) for c in wanted}
            for batch in pa.table(cols).to_batches(max_chunksize=BATCH_ROWS):
                yield LogBatch(batch, np.arange(row, row + batch.num_rows, dtype=np.int64))
                row += batch.num_rows


def _lookup(obj: dict[str, Any], name: str) -> Any:
    """``obj[name]``, or the nested value a dotted name (``event.type``) points to."""
    if name in obj:
        return obj[name]
    value: Any = obj
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _json_text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, str):
        return v
    return json.dumps(v) if isinstance(v, dict | list) else str(v)


def _jsonl_careful(chunk: bytes, wanted: list[str], first: int) -> LogBatch:
    """A chunk Arrow refused, line by line: values as text, bad lines malformed."""
    lines = [ln for ln in (x.strip() for x in chunk.split(b"\n")) if ln]
    values: dict[str, list[str | None]] = {c: [] for c in wanted}
    rows, malformed = [], []
    for k, line in enumerate(lines):
        if len(line) > MAX_LINE_BYTES:
            malformed.append((first + k, f"is a line of {len(line):,} bytes, over the "
                              f"{MAX_LINE_BYTES:,}-byte limit of one event"))
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            # a UnicodeDecodeError (not UTF-8) has no .msg
            why = exc.msg if isinstance(exc, json.JSONDecodeError) else exc
            malformed.append((first + k, f"is not JSON ({why}): {line[:80]!r}"))
            continue
        if not isinstance(obj, dict):
            malformed.append((first + k, f"is not a JSON object: {line[:80]!r}"))
            continue
        found = {c: _lookup(obj, c) for c in wanted}
        nested = [c for c, v in found.items() if isinstance(v, dict | list)]
        if nested:
            malformed.append((first + k, f"field {nested[0]!r} holds a JSON "
                              f"{'array' if isinstance(found[nested[0]], list) else 'object'}, "
                              f"not a value: {line[:80]!r}"))
            continue
        for c in wanted:
            values[c].append(_json_text(found[c]))
        rows.append(first + k)
    table = pa.table({c: pa.array(v, pa.string()) for c, v in values.items()})
    return LogBatch(_one_batch(table), np.array(rows, dtype=np.int64), malformed)


def _parquet_batches(uri: str, wanted: list[str]) -> Iterator[LogBatch]:
    count = _Counter()
    with _parquet_source(uri) as source:
        for batch in stream_batches(source, BATCH_ROWS, wanted,
                                    on_schema=lambda names: _check_columns(uri, names, wanted)):
            yield LogBatch(batch, count.take(batch.num_rows))


@contextmanager
def _parquet_source(uri: str) -> Iterator[pa.NativeFile | IO[bytes]]:
    """A plain local parquet log as pyarrow's own file; a compressed, zipped or remote
    one as :func:`_opened` gives it (streamed: it may be far too big to read whole)."""
    if is_local(uri) and infer_compression(uri) is None:
        try:
            fs, path = fsspec.core.url_to_fs(uri)
            native = local_file(fs, path)
        except OSError as exc:
            raise UnreadableLog(f"cannot be opened: {str(exc)[:300]}") from None
        with native:
            yield native
        return
    with _opened(uri) as fh:
        yield fh


@contextmanager
def _opened(uri: str) -> Iterator[IO[bytes]]:
    try:
        opened = _open(uri)
        fh = opened.__enter__()
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise UnreadableLog(f"cannot be opened: {str(exc)[:300]}") from None
    try:
        yield fh
    finally:
        opened.__exit__(None, None, None)


def iter_batches(uri: str, cols: EventColumns) -> Iterator[LogBatch]:
    """The log's rows in file order, in batches of the wanted columns (see the module doc)."""
    fmt = log_format(uri, cols.format)
    wanted = wanted_columns(cols)
    readers: dict[str, Any] = {"jsonl": _jsonl_batches, "parquet": _parquet_batches}
    if fmt == "csv":
        delimiter = cols.delimiter or sniff_delimiter(uri, wanted)
        readers["csv"] = lambda u, w: _csv_batches(u, w, delimiter)
    try:
        yield from readers[fmt](uri, wanted)
    except (pa.ArrowInvalid, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise UnreadableLog(f"cannot be read as {fmt}: {str(exc)[:300]}") from None
