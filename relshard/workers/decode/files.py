"""Opening an input once: access and size checks, magic bytes, hashing what is decoded.

Local paths (and ``file://`` URIs) are opened directly; other URIs go through
fsspec. Images are read into memory once and hashed from the same bytes the
decoder sees. Videos are never read into memory: a local file is hashed in 1 MiB
chunks and decoded in place; a remote one is copied to a local temporary file
(FFmpeg needs a seekable local file) while it is hashed, and the copy is removed
afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import fsspec
from fsspec.core import split_protocol

from relshard.shards.item import InputRef
from relshard.shards.layout import is_local
from relshard.spec import DecodeSpec
from relshard.workers.decode.base import DecodeError
from relshard.workers.decode.formats import HEAD_BYTES, extension, sniff

CHUNK = 1 << 20
_ACCESS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def local_path(uri: str) -> str | None:
    """The filesystem path of a local URI, or None for a remote one."""
    if not is_local(uri):
        return None
    return split_protocol(uri)[1] if "://" in uri else uri


@dataclass
class LocalCopy:
    """A local file holding the input's bytes, their sha256, and the bytes when kept."""

    path: str
    sha256: str
    data: bytes | None = None


class MediaFile:
    """One opened input. Use :func:`open_media`; read with :meth:`read_all` or :meth:`local`."""

    def __init__(self, ref: InputRef, fh: IO[bytes], size: int, path: str | None) -> None:
        self.ref = ref
        self.uri = ref.uri
        self.ext = extension(ref.uri)
        self.size = size
        self.path = path
        self._fh = fh
        self.head = self.read_at(0, HEAD_BYTES)
        self.format = sniff(self.head)

    def read_at(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes at ``offset``, leaving the read position at the start."""
        if self.path is not None:
            return os.pread(self._fh.fileno(), n, offset)
        self._fh.seek(offset)
        data = self._fh.read(n)
        self._fh.seek(0)
        return data

    def read_all(self) -> bytes:
        """The whole file (images). Its length is bounded by ``max_file_bytes``."""
        self._fh.seek(0)
        return self._fh.read()

    def _chunks(self) -> Iterator[memoryview]:
        self._fh.seek(0)
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while True:
            n = self._fh.readinto(view) if hasattr(self._fh, "readinto") else None
            if n is None:  # a file object without readinto
                block = self._fh.read(CHUNK)
                n = len(block)
                view[:n] = block
            if not n:
                return
            yield view[:n]

    @contextlib.contextmanager
    def local(self, keep_bytes: bool = False) -> Iterator[LocalCopy]:
        """A local path to the content, hashed on the way; ``keep_bytes`` also returns the bytes."""
        digest = hashlib.sha256()
        kept = bytearray() if keep_bytes else None
        if self.path is not None:
            for block in self._chunks():
                digest.update(block)
                if kept is not None:
                    kept += block
            yield LocalCopy(self.path, digest.hexdigest(), None if kept is None else bytes(kept))
            return
        suffix = f".{self.ext}" if self.ext.isalnum() else ""
        fd, tmp = tempfile.mkstemp(prefix="relshard-", suffix=suffix)
        try:
            with os.fdopen(fd, "wb") as out:
                for block in self._chunks():
                    digest.update(block)
                    out.write(block)
                    if kept is not None:
                        kept += block
            yield LocalCopy(tmp, digest.hexdigest(), None if kept is None else bytes(kept))
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def close(self) -> None:
        self._fh.close()


def _open_local(path: str) -> tuple[IO[bytes], int]:
    fh = open(path, "rb")  # noqa: SIM115 - closed by MediaFile.close
    try:
        size = os.fstat(fh.fileno()).st_size
    except OSError:
        fh.close()
        raise
    return fh, size


def _open_remote(uri: str) -> tuple[IO[bytes], int]:
    fh: Any = fsspec.open(uri, "rb").open()
    size = getattr(fh, "size", None)
    if size is None:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(0)
    return fh, int(size)


def _check_size(size: int, cfg: DecodeSpec) -> None:
    if size == 0:
        raise DecodeError("empty_file", "the file has 0 bytes")
    if size > cfg.max_file_bytes:
        raise DecodeError(
            "file_too_large", f"{size} bytes > decode.max_file_bytes={int(cfg.max_file_bytes)}"
        )


@contextlib.contextmanager
def open_media(ref: InputRef, cfg: DecodeSpec) -> Iterator[MediaFile]:
    """Open ``ref`` once, check access and size, and sniff its first bytes.

    Raises ``DecodeError`` with reason ``unreadable``, ``empty_file`` or
    ``file_too_large``.
    """
    path = local_path(ref.uri)
    try:
        fh, size = _open_local(path) if path is not None else _open_remote(ref.uri)
    except _ACCESS_ERRORS as exc:
        raise DecodeError("unreadable", f"{type(exc).__name__}: {exc}") from None
    try:
        _check_size(size, cfg)
        media = MediaFile(ref, fh, size, path)
    except BaseException:
        fh.close()
        raise
    try:
        yield media
    finally:
        media.close()


def check_access(ref: InputRef, cfg: DecodeSpec) -> None:
    """The access and size checks of :func:`open_media`, for decoders that open files themselves."""
    with open_media(ref, cfg):
        pass
