"""CSV and JSON logs and manifests read without handing pyarrow a Python object.

pyarrow's CSV and JSON readers read a Python file object (or ``io.BytesIO``) from their own
I/O threads, whatever ``use_threads`` says, and a process whose last reference to one was
dropped there after Python began to exit aborted (status 134) or hung at exit. Local logs
are now opened and decompressed by pyarrow itself, anything else is read in Python and
parsed from Arrow-owned copies (:class:`relshard.events.reader.CsvBlocks`): the same rows
either way, and processes that read logs from threads exit cleanly.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pytest

from relshard.errors import SpecError
from relshard.events import reader as reader_mod
from relshard.events.reader import MAX_LINE_BYTES, CsvBlocks, iter_batches
from relshard.pipelines.sources import SourceLister
from relshard.shards.parquet_read import native_input
from relshard.spec import EventColumns, SourceSpec
from tests.helpers.arrow_spy import record_sources

COLS = EventColumns(time="time", type="kind")
N = 3000
ROWS = [(str(1_700_000_000 + i), f"k{i % 7}") for i in range(N)]
CSV = ("time,kind,x\n" + "".join(f"{t},{k},{i * 0.25}\n" for i, (t, k) in enumerate(ROWS)))
JSONL = "".join(json.dumps({"time": t, "kind": k, "x": i * 0.25}) + "\n"
                for i, (t, k) in enumerate(ROWS))
MEMORY = fsspec.filesystem("memory")


def _pack(name: str, text: str) -> bytes:
    data = text.encode()
    if name.endswith(".gz"):
        return gzip.compress(data)
    if name.endswith(".bz2"):
        return bz2.compress(data)
    if name.endswith(".xz"):
        return lzma.compress(data)
    if name.endswith(".zip"):
        path = Path(f"/tmp/{uuid.uuid4().hex}.zip")
        try:
            with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
                zf.writestr("log.csv", text)
            return path.read_bytes()
        finally:
            path.unlink()
    return data


def _store(where: str, tmp_path: Path, memory_root: str, name: str, data: bytes) -> str:
    if where == "local":
        (tmp_path / name).write_bytes(data)
        return str(tmp_path / name)
    MEMORY.pipe_file(f"{memory_root}/{name}", data)
    return f"memory://{memory_root}/{name}"


def _read(uri: str) -> tuple[list[tuple[str, str]], dict[int, str]]:
    got: list[tuple[str, str]] = []
    bad: dict[int, str] = {}
    for b in iter_batches(uri, COLS):
        got += zip(b.batch.column("time").to_pylist(), b.batch.column("kind").to_pylist(),
                   strict=True)
        bad.update(b.malformed)
    return got, bad


@pytest.mark.parametrize("where", ["local", "memory"])
@pytest.mark.parametrize("name", ["log.csv", "log.csv.gz", "log.csv.bz2", "log.csv.xz",
                                  "log.zip", "log.jsonl", "log.jsonl.gz"])
@pytest.mark.parametrize("block", [None, 2048])
def test_every_way_to_store_a_log_reads_the_same_rows(
        tmp_path: Path, memory_root: str, monkeypatch: pytest.MonkeyPatch, where: str,
        name: str, block: int | None) -> None:
    if block:  # many blocks: the rows of later blocks, read after the header of the first
        monkeypatch.setattr(reader_mod, "_BLOCK_BYTES", block)
    text = JSONL if ".jsonl" in name else CSV
    uri = _store(where, tmp_path, memory_root, name, _pack(name, text))
    assert _read(uri) == (ROWS, {})


@pytest.mark.parametrize("name", ["log.csv", "log.csv.gz", "log.zip"])
def test_broken_and_over_long_lines_are_read_alike_everywhere(
        tmp_path: Path, memory_root: str, name: str) -> None:
    lines = CSV.splitlines(keepends=True)
    lines[101] = "1,2,3,4\n"  # data row 100: a field too many
    lines[2001] = "1700002000," + "x" * (MAX_LINE_BYTES + 10) + ",0\n"  # data row 2000
    data = _pack(name, "".join(lines))
    local, bad = _read(_store("local", tmp_path, memory_root, name, data))
    assert sorted(bad) == [100, 2000] and "over the 1,048,576-byte limit" in bad[2000]
    assert len(local) == N - 2
    assert _read(_store("memory", tmp_path, memory_root, name, data)) == (local, bad)


@pytest.mark.parametrize("where", ["local", "memory"])
@pytest.mark.parametrize("name", ["log.csv", "log.csv.gz", "log.zip"])
def test_a_missing_column_is_a_spec_error(tmp_path: Path, memory_root: str, where: str,
                                          name: str) -> None:
    uri = _store(where, tmp_path, memory_root, name, _pack(name, CSV.replace("kind", "what", 1)))
    with pytest.raises(SpecError, match="no column"):
        _read(uri)


def test_a_missing_local_log_cannot_be_opened(tmp_path: Path) -> None:
    for name in ("gone.csv", "gone.csv.gz"):
        with pytest.raises(reader_mod.UnreadableLog, match="cannot be opened"):
            _read(str(tmp_path / name))


def test_pyarrow_is_handed_only_arrow_files(tmp_path: Path, memory_root: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Every source the CSV and JSON readers get is Arrow's own (never a ``pa.PythonFile``,
    which is what pyarrow wraps a Python file object or ``io.BytesIO`` in)."""
    handed = record_sources(monkeypatch, [(pacsv, "open_csv"), (pacsv, "read_csv"),
                                          (pajson, "read_json")])
    broken = CSV.replace("1700000005,", "1,2,3,4,", 1)  # the careful path too
    for where in ("local", "memory"):
        for name, text in (("a.csv", CSV), ("b.csv.gz", broken), ("c.zip", CSV),
                           ("d.jsonl", JSONL), ("e.jsonl", JSONL.replace("}", "", 1))):
            _read(_store(where, tmp_path, memory_root, name, _pack(name, text)))
    assert len(handed) >= 10
    for source in handed:
        assert isinstance(source, pa.NativeFile) and not isinstance(source, pa.PythonFile), \
            source


def _blocks(text: bytes, block: int, **convert: Any) -> pa.Table:
    import io

    reader = CsvBlocks(io.BytesIO(text), block, pacsv.ParseOptions(),
                       pacsv.ConvertOptions(**convert))
    return pa.Table.from_batches(list(reader), reader.schema)


def _open_csv(text: bytes, block: int, **convert: Any) -> pa.Table:
    reader = pacsv.open_csv(pa.BufferReader(text), read_options=pacsv.ReadOptions(
        block_size=block), convert_options=pacsv.ConvertOptions(**convert))
    return reader.read_all()


@pytest.mark.parametrize("text", [
    b"a,b\n1,x\n2,y\n" * 50,
    b"\xef\xbb\xbfa,b\r\n" + b"1,x\r\n" * 200 + b"\r\n\r\n3,z\r\n",  # BOM, CRLF, empty lines
    b"\n\na,b\n" + b"1,\n" * 100 + b"2,y",  # empty lines first, no final newline
    b"a,b\n" + b"1,2\n" * 300,
])
def test_csv_blocks_read_as_open_csv_does(text: bytes) -> None:
    def outcome(read: Any, block: int) -> pa.Table | type[Exception]:
        try:
            table: pa.Table = read(text, block)
            return table
        except pa.ArrowInvalid as exc:  # a later block that does not fit the types
            return type(exc)

    for block in (64, 1 << 20):
        assert outcome(_blocks, block) == outcome(_open_csv, block)


def test_csv_blocks_keep_the_types_of_the_first_block() -> None:
    text = b"n,s\n" + b"1,x\n" * 100 + b"oops,y\n"
    with pytest.raises(pa.ArrowInvalid):
        _open_csv(text, 128)
    with pytest.raises(pa.ArrowInvalid):
        _blocks(text, 128)
    assert _blocks(text, 1 << 20).column("n").type == pa.string()  # one block: inferred so
    for read in (_open_csv, _blocks):
        with pytest.raises(pa.ArrowInvalid):  # an empty file, as open_csv says
            read(b"", 1024)
        with pytest.raises(pa.ArrowInvalid):  # a line longer than a block
            read(b"a\n" + b"x" * 5000 + b"\n", 1024)


def test_native_input_decompresses_and_closes(tmp_path: Path) -> None:
    local = fsspec.filesystem("file")
    for name in ("m.csv", "m.csv.gz", "m.csv.bz2"):
        (tmp_path / name).write_bytes(_pack(name, CSV))
        source = native_input(local, str(tmp_path / name))
        assert source is not None and not isinstance(source, pa.PythonFile)
        with source:
            assert source.read() == CSV.encode()
        assert source.closed
    (tmp_path / "m.csv.xz").write_bytes(_pack("m.csv.xz", CSV))
    assert native_input(local, str(tmp_path / "m.csv.xz")) is None  # Arrow has no xz
    assert native_input(MEMORY, "/anything.csv") is None
    with pytest.raises(FileNotFoundError):
        native_input(local, str(tmp_path / "missing.csv"))


@pytest.mark.parametrize("name", ["list.csv", "list.csv.gz", "list.jsonl", "list.jsonl.gz",
                                  "list.ndjson"])
def test_manifests_list_the_same_inputs_everywhere(tmp_path: Path, memory_root: str,
                                                   name: str) -> None:
    rows = [{"uri": f"media/{i}.jpg", "label": f"c{i % 3}", "score": i / 4} for i in range(500)]
    if ".csv" in name:
        text = "uri,label,score\n" + "".join(f"{r['uri']},{r['label']},{r['score']}\n"
                                             for r in rows)
    else:
        text = "".join(json.dumps(r) + "\n" for r in rows)
    found = []
    for where in ("local", "memory"):
        uri = _store(where, tmp_path, memory_root, name, _pack(name, text))
        refs = list(SourceLister([SourceSpec(path=uri)]))
        found.append([(r.input_key, r.extra) for r in refs])
        assert refs[7].uri.endswith("/media/7.jpg")
    assert found[0] == found[1]
    assert [extra for _, extra in found[0]] == [{"label": r["label"], "score": r["score"]}
                                               for r in rows]


def test_a_streamed_csv_manifest_keeps_the_types_of_its_first_block(
        memory_root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """As ``open_csv`` did: a column typed from the first block refuses a later value."""
    real = CsvBlocks.__init__

    def small(self: CsvBlocks, fh: Any, block_bytes: int, parse: Any, convert: Any) -> None:
        real(self, fh, 256, parse, convert)

    monkeypatch.setattr(CsvBlocks, "__init__", small)
    text = "uri,n\n" + "".join(f"m/{i}.jpg,{i}\n" for i in range(100)) + "m/x.jpg,many\n"
    MEMORY.pipe_file(f"{memory_root}/list.csv", text.encode())
    with pytest.raises(pa.ArrowInvalid):
        list(SourceLister([SourceSpec(path=f"memory://{memory_root}/list.csv")]))


# Reads logs from a thread pool and once more on the main thread, then exits. The last
# read stops at a missing column while pyarrow still reads ahead. When pyarrow's CSV reader
# was handed the fsspec file of a log (pyarrow 26.0.1), this script aborted at exit (status
# 134, "terminate called without an active exception") in 3 of 20 runs and hung there
# (pyarrow's thread pool waiting at exit for a reader thread stuck on the GIL) in 2 more:
# 8 runs all pass about 10% of the time. It passed 30 of 30 runs since.
_SCRIPT = """
import sys
from concurrent.futures import ThreadPoolExecutor

import fsspec

from relshard.errors import SpecError
from relshard.events.reader import iter_batches
from relshard.spec import EventColumns

paths = sys.argv[1:]
mem = fsspec.filesystem("memory")
for p in paths:
    mem.pipe_file("/exit-test" + p, open(p, "rb").read())
uris = paths + ["memory:///exit-test" + p for p in paths]
cols = EventColumns(time="time", type="kind")


def rows(uri):
    try:
        return sum(b.batch.num_rows for b in iter_batches(uri, cols))
    except SpecError:
        return 0


with ThreadPoolExecutor(4) as pool:
    total = sum(pool.map(rows, uris))
print(total + rows(paths[0]))
"""
EXIT_TEST_ROWS = 200_000


def _exit_test_files(folder: Path) -> list[str]:
    """A 13 MB gzip CSV that lacks a wanted column, then a 4 MB one and a JSONL log."""
    lines = "".join(f"{1_700_000_000 + i},k{i % 7},{i * 0.25}\n" for i in range(EXIT_TEST_ROWS))
    paths = [folder / "nocol.csv.gz", folder / "good.csv.gz", folder / "good.jsonl"]
    paths[0].write_bytes(gzip.compress(("when,kind,x\n" + lines * 3).encode(), 1))
    paths[1].write_bytes(gzip.compress(("time,kind,x\n" + lines).encode(), 1))
    paths[2].write_text("".join(json.dumps({"time": i, "kind": "a"}) + "\n"
                                for i in range(EXIT_TEST_ROWS // 4)))
    return [str(p) for p in paths]


@pytest.mark.slow  # 8 interpreters: about 5 s
def test_processes_that_read_logs_from_threads_exit_cleanly(tmp_path: Path) -> None:
    paths = _exit_test_files(tmp_path)
    want = str(2 * (EXIT_TEST_ROWS + EXIT_TEST_ROWS // 4))
    codes = []
    for _ in range(8):
        try:
            done = subprocess.run([sys.executable, "-c", _SCRIPT, *paths],
                                  capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            codes.append(("hung at exit", ""))
            continue
        assert done.returncode != 0 or done.stdout.strip() == want, done.stdout
        codes.append((str(done.returncode), done.stderr[-300:]))
    assert [c for c in codes if c[0] != "0"] == []
