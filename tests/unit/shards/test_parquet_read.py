"""Reading parquet without handing pyarrow a Python object: the same tables on the local disk
and on another filesystem, the same errors as through ``fs.open``, and processes that read
from threads and exit without aborting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec import AbstractFileSystem

from relshard.shards.parquet_read import (
    arrow_buffer,
    local_file,
    parquet_file,
    read_columns,
    read_metadata,
    read_schema,
    read_table,
)
from tests.helpers.arrow_spy import record_sources

TABLE = pa.table({"key": [f"k{i}" for i in range(40)], "n": list(range(40)),
                  "s": ["x" * (i % 7) for i in range(40)]})
META = {b"relshard": b'{"unit": "u0"}'}


def _write(path: Path) -> bytes:
    pq.write_table(TABLE.replace_schema_metadata(META), path, row_group_size=16)
    return path.read_bytes()


MEMORY = fsspec.filesystem("memory")


@pytest.fixture()
def both(tmp_path: Path, memory_root: str) -> list[tuple[AbstractFileSystem, str]]:
    """The same parquet file on the local disk and in a memory:// filesystem."""
    data = _write(tmp_path / "t.parquet")
    MEMORY.pipe_file(f"{memory_root}/t.parquet", data)
    return [(fsspec.filesystem("file"), str(tmp_path / "t.parquet")),
            (MEMORY, f"{memory_root}/t.parquet")]


def test_local_and_memory_read_the_same_table(both: list[tuple[AbstractFileSystem, str]]) -> None:
    for fs, path in both:
        table = read_table(fs, path)
        assert table.replace_schema_metadata(None).equals(TABLE)
        assert table.schema.metadata[b"relshard"] == META[b"relshard"]
        assert read_table(fs, path, ["n", "key"]).column_names == ["n", "key"]
        assert read_table(fs, path, ["n"]).column("n").to_pylist() == list(range(40))
        assert read_columns(fs, path, ["s", "absent", "key"]).column_names == ["s", "key"]
        meta = read_metadata(fs, path)
        assert (meta.num_rows, meta.num_row_groups) == (40, 3)
        assert meta.metadata[b"relshard"] == META[b"relshard"]
        assert read_schema(fs, path).names == ["key", "n", "s"]
        with parquet_file(fs, path) as pf:
            assert pf.schema_arrow.names == ["key", "n", "s"]
            batches = list(pf.iter_batches(batch_size=10, columns=["key"]))
            assert sum(b.num_rows for b in batches) == 40
            assert pf.read(columns=["s"]).column("s").equals(TABLE.column("s"))


def test_a_local_file_url_reads_as_its_path(tmp_path: Path) -> None:
    _write(tmp_path / "t.parquet")
    fs = fsspec.filesystem("file")
    assert read_table(fs, f"file://{tmp_path}/t.parquet", ["n"]).num_rows == 40
    with local_file(fs, f"file://{tmp_path}/t.parquet") as f:
        assert f.size() == (tmp_path / "t.parquet").stat().st_size


def test_errors_are_those_of_fs_open(tmp_path: Path, memory_root: str) -> None:
    local = fsspec.filesystem("file")
    good = _write(tmp_path / "good.parquet")
    (tmp_path / "garbage.parquet").write_bytes(b"not parquet at all, not even close")
    (tmp_path / "cut.parquet").write_bytes(good[: len(good) // 2])
    (tmp_path / "empty.parquet").write_bytes(b"")
    for name in ("good", "garbage", "cut", "empty"):
        MEMORY.pipe_file(f"{memory_root}/{name}.parquet",
                         (tmp_path / f"{name}.parquet").read_bytes())
    for fs, folder in ((local, str(tmp_path)), (MEMORY, memory_root)):
        for read in (read_table, read_metadata, read_schema, parquet_file):
            with pytest.raises(FileNotFoundError):
                read(fs, f"{folder}/missing.parquet")
            for name in ("garbage", "cut", "empty"):
                with pytest.raises(pa.ArrowInvalid):
                    read(fs, f"{folder}/{name}.parquet")
        with pytest.raises(pa.ArrowInvalid):  # a column the file lacks
            read_table(fs, f"{folder}/good.parquet", ["absent"])
    (tmp_path / "adir.parquet").mkdir()
    for read in (read_table, read_metadata, read_schema, parquet_file):
        with pytest.raises(OSError):  # a folder is not read as a dataset
            read(local, str(tmp_path / "adir.parquet"))


def test_pyarrow_is_handed_only_arrow_files(both: list[tuple[AbstractFileSystem, str]],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """What pyarrow receives is its own file or a path, never a Python file object (which it
    would wrap in a ``pa.PythonFile``)."""
    import relshard.shards.parquet_read as parquet_read

    handed = record_sources(monkeypatch, [(parquet_read.pq, name) for name in
                                          ("read_table", "read_metadata", "read_schema",
                                           "ParquetFile")])
    for fs, path in both:
        read_table(fs, path)
        read_columns(fs, path, ["n"])
        read_metadata(fs, path)
        read_schema(fs, path)
        with parquet_file(fs, path) as pf:
            pf.read()
    assert len(handed) == 2 * 6
    for source in handed:
        assert isinstance(source, str) or (isinstance(source, pa.NativeFile)
                                           and not isinstance(source, pa.PythonFile)), source


def test_arrow_buffer_holds_no_python_object() -> None:
    data = bytes(range(256)) * 10
    before = sys.getrefcount(data)
    held = pa.py_buffer(data)  # what pa.BufferReader(bytes) does: a reference to `data`
    assert sys.getrefcount(data) == before + 1
    del held
    buf = arrow_buffer(data)
    assert sys.getrefcount(data) == before
    assert buf.to_pybytes() == data and buf.size == len(data)
    assert arrow_buffer(b"").size == 0


# Reads from a thread pool and once more on the main thread, then exits: where pyarrow held
# a Python object on one of its own threads, the exit aborted the process (status 134)
# after its output. Files of a few MB in several row groups leave pyarrow's tasks running
# longest after a read returns. With ``pq.read_table(open(path, "rb"))`` (``fs.open`` in
# memory mode) in place of the helper, this loop aborted in 14 of 80 runs: 20 runs all
# pass about 3% of the time.
_SCRIPT = """
import sys
from concurrent.futures import ThreadPoolExecutor

import fsspec

from relshard.shards.parquet_read import read_table

mode, paths = sys.argv[1], sys.argv[2:]
fs = fsspec.filesystem("file")
if mode == "memory":
    mem = fsspec.filesystem("memory")
    for p in paths:
        mem.pipe_file("/exit-test" + p, fs.cat_file(p))
    fs, paths = mem, ["/exit-test" + p for p in paths]


def rows(path):
    return read_table(fs, path).num_rows


with ThreadPoolExecutor(4) as pool:
    total = sum(pool.map(rows, paths))
print(total + rows(paths[0]))
"""


EXIT_TEST_ROWS = 100_000


def _exit_test_files(folder: Path) -> list[str]:
    """Four parquet files of 3.5 MB, five row groups each."""
    table = pa.table({f"c{j}": np.arange(EXIT_TEST_ROWS) for j in range(6)})
    paths = [str(folder / f"f{i}.parquet") for i in range(4)]
    for path in paths:
        pq.write_table(table, path, row_group_size=EXIT_TEST_ROWS // 5)
    return paths


@pytest.mark.slow  # 20 interpreters: about 10 s
def test_processes_that_read_from_threads_exit_cleanly(tmp_path: Path) -> None:
    paths = _exit_test_files(tmp_path)
    codes = []
    for run in range(20):
        mode = "local" if run % 2 == 0 else "memory"
        done = subprocess.run([sys.executable, "-c", _SCRIPT, mode, *paths],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode != 0 or done.stdout.strip() == str(5 * EXIT_TEST_ROWS)
        codes.append((mode, done.returncode, done.stderr[-300:]))
    assert [c for c in codes if c[1] != 0] == []

