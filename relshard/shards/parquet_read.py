"""Reading parquet files without handing pyarrow a Python object.

The one rule here: pyarrow's parquet readers are never given a Python-owned object
(a Python or fsspec file object, or a buffer over Python ``bytes``). They read
asynchronously: the scanner's tasks run on Arrow's own C++ thread pools and keep a
reference to the source, and the last one may drop it after ``read_table`` has
returned. Dropping a Python object there takes the GIL; once the interpreter has
begun to finalize, that thread is forced to exit inside a ``noexcept`` destructor
(``PyReadableFile::~PyReadableFile`` -> ``PyGILState_Ensure``), and the process
aborts (``terminate called without an active exception``, exit status 134) *after*
the command has printed its correct result. With pyarrow 26.0.1, reading a few
small files from a thread pool and exiting aborted in about 10-30% of runs with
``pq.read_table(open(path, "rb"))``, about 3% with ``pq.ParquetFile(f).read()`` on
a Python file, about 2% with ``pq.read_table(pa.BufferReader(python_bytes))``, and
in none of 60 runs with a plain local path.

So:

- on the local disk (:func:`relshard.shards.layout.is_local`) pyarrow opens the
  file itself, through its own ``LocalFileSystem`` (:func:`local_file`; a plain
  path string is not handed over, as ``pq.read_table`` would read a directory by
  that name as a dataset instead of failing);
- on any other filesystem the file is read whole through fsspec and copied into
  memory that Arrow allocated and owns (:func:`arrow_buffer`), and pyarrow reads
  that buffer. Remote files are therefore read whole, even for their footer
  alone: meant for the files of an output (index, rejects, event parts), which are
  small. A user's file of unknown size (a parquet listing, an event log) is
  streamed instead (:func:`stream_batches`): a remote one through a Python file
  object with ``pre_buffer=False`` and ``use_threads=False``, under which pyarrow
  makes every read on the calling thread (measured: with the defaults,
  ``iter_batches`` also reads from a pool thread).

The CSV and JSON readers of pyarrow read a Python file object from its I/O threads
whatever their ``use_threads`` (measured with pyarrow 26: ``pacsv.open_csv``,
``pacsv.read_csv`` and ``pajson.read_json``), so they are only ever handed a
:func:`native_input` or a ``pa.BufferReader`` over an :func:`arrow_buffer`; a file of
unknown size that only Python can read is fed to them in blocks of lines
(``relshard.events.reader.CsvBlocks``).

Errors arise as they did through ``fs.open``: a missing file is a
:class:`FileNotFoundError`, another failed read an :class:`OSError`, a file that
is not parquet (empty, truncated, garbage) :class:`pyarrow.ArrowInvalid`, and a
column a file lacks :class:`pyarrow.ArrowInvalid` from :func:`read_table`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from fsspec import AbstractFileSystem
from fsspec.utils import infer_compression

from relshard.shards.layout import is_local

_LOCAL = pafs.LocalFileSystem()


def local_path(fs: AbstractFileSystem, path: str) -> str:
    """``path`` of the local ``fs`` as the absolute path pyarrow opens (no ``file://``)."""
    stripped: str = fs._strip_protocol(path)
    return stripped


def local_file(fs: AbstractFileSystem, path: str) -> pa.NativeFile:
    """The file ``path`` of the local ``fs`` opened by pyarrow itself, for reading; it
    raises as ``fs.open`` does (:class:`FileNotFoundError`, an :class:`OSError` for a
    directory). Close it when done (it is a context manager)."""
    return _LOCAL.open_input_file(local_path(fs, path))


# fsspec's compression="infer" names (from the file's suffix) that Arrow decompresses itself
_ARROW_CODECS = {"gzip": "gzip", "bz2": "bz2"}


def native_input(fs: AbstractFileSystem, path: str) -> pa.NativeFile | None:
    """The file ``path`` of ``fs`` as pyarrow's own stream, decompressed as
    ``fs.open(path, compression="infer")`` would (by Arrow, for ``.gz`` and ``.bz2``), when
    ``fs`` is the local disk; None when it is not, or when Arrow cannot decompress the file
    (``.xz``, ``.zip``): read that one through fsspec. It raises as :func:`local_file`
    does; close it when done (closing it closes the file)."""
    if not is_local(fs):
        return None
    compression = infer_compression(path)
    if compression is None:
        return local_file(fs, path)
    codec = _ARROW_CODECS.get(compression)
    if codec is None:
        return None
    return pa.CompressedInputStream(local_file(fs, path), codec)


def arrow_buffer(data: bytes | bytearray | memoryview) -> pa.Buffer:
    """A copy of ``data`` in memory that Arrow allocated (it holds no Python object)."""
    buf = pa.allocate_buffer(len(data))
    writer = pa.FixedSizeBufferWriter(buf)
    writer.write(data)
    writer.close()
    return buf


def _remote_reader(fs: AbstractFileSystem, path: str) -> pa.BufferReader:
    with fs.open(path, "rb") as f:
        data = f.read()
    return pa.BufferReader(arrow_buffer(data))


@contextmanager
def _source(fs: AbstractFileSystem, path: str) -> Iterator[pa.NativeFile]:
    """The file as an Arrow file: pyarrow's own local file (a directory is an error, as
    through ``fs.open``), or an Arrow copy of a remote one."""
    if is_local(fs):
        with local_file(fs, path) as source:
            yield source
    else:
        yield _remote_reader(fs, path)


def read_table(fs: AbstractFileSystem, path: str, columns: list[str] | None = None) -> pa.Table:
    """The table of the parquet file ``path`` on ``fs`` (``columns`` only, when given).

    A column the file lacks raises :class:`pyarrow.ArrowInvalid`, as
    :func:`pyarrow.parquet.read_table` does; :func:`read_columns` skips it instead.
    """
    with _source(fs, path) as source:
        return pq.read_table(source, columns=columns)


def read_columns(fs: AbstractFileSystem, path: str, columns: list[str]) -> pa.Table:
    """Those of ``columns`` that the parquet file ``path`` on ``fs`` has, in that order
    (the file is opened once)."""
    with _source(fs, path) as source:
        names = set(pq.read_schema(source).names)
        return pq.read_table(source, columns=[c for c in columns if c in names])


def parquet_file(fs: AbstractFileSystem, path: str) -> pq.ParquetFile:
    """The parquet file ``path`` on ``fs``, its footer read (for ``metadata``,
    ``schema_arrow``, ``read`` and ``iter_batches``); use it as a context manager, so
    that a local file is closed when done."""
    if is_local(fs):
        return pq.ParquetFile(local_path(fs, path), filesystem=_LOCAL)  # closed by close()
    return pq.ParquetFile(_remote_reader(fs, path))


def read_metadata(fs: AbstractFileSystem, path: str) -> pq.FileMetaData:
    """The footer of the parquet file ``path`` on ``fs`` (rows, key-value metadata)."""
    with _source(fs, path) as source:
        return pq.read_metadata(source)


def read_schema(fs: AbstractFileSystem, path: str) -> pa.Schema:
    """The Arrow schema of the parquet file ``path`` on ``fs``."""
    with _source(fs, path) as source:
        return pq.read_schema(source)


def stream_batches(source: pa.NativeFile | IO[bytes], batch_size: int,
                   columns: list[str] | None = None,
                   on_schema: Callable[[list[str]], None] | None = None,
                   ) -> Iterator[pa.RecordBatch]:
    """Record batches of a parquet file of unknown size, streamed.

    ``source`` is pyarrow's own file (:func:`local_file`: read as pyarrow likes, with
    its threads) or a Python file object (a remote or compressed file, too big to read
    whole): then without pre-buffering and decode threads, under which pyarrow makes every
    read on this thread and keeps nothing of the object on its own (the module doc says
    why). ``on_schema`` is called with the file's column names before the first batch."""
    native = isinstance(source, pa.NativeFile)
    pfile = pq.ParquetFile(source, pre_buffer=native)
    if on_schema is not None:
        on_schema(pfile.schema_arrow.names)
    yield from pfile.iter_batches(batch_size=batch_size, columns=columns, use_threads=native)
