"""A fast, deterministic POSIX tar writer that hashes the stream as it writes.

Every member is a regular file with mode ``0o644``, uid/gid 0, empty user and
group names and one fixed mtime, so identical members give byte-identical
archives. Headers are ustar (``ustar\\0`` magic, as :mod:`tarfile` writes in
PAX format); a name longer than 100 bytes, or a size of 8 GiB or more, gets a
pax extended header first. The output is byte for byte what
``tarfile.open(..., format=tarfile.PAX_FORMAT)`` writes for the same members,
without tarfile's per-member overhead.

Readers that ignore pax headers (``wids`` reads only the 100-byte ustar name
field) need names of at most 100 bytes; sample keys from
:func:`relshard.record.make_input_key` stay well below that.

The writer records, for each sample (a group of members written together), the
byte offset of its first header and the bytes it spans, and keeps a running
sha256 of everything written, so a shard's checksum costs no second read.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Callable, Sequence
from typing import BinaryIO

BLOCK = 512
RECORD = 20 * BLOCK  # tarfile pads the archive to a whole record
MAX_NAME = 100  # bytes of the ustar name field
MAX_SIZE = 8**11 - 1  # largest size 11 octal digits hold
_ZEROS = bytes(RECORD + 2 * BLOCK)  # the longest run of zeros ever written at once

Member = tuple[str, bytes]


def validate_member_name(name: str) -> bytes:
    """Return ``name`` as UTF-8 if it is a safe relative member name, else raise ValueError.

    Refused: empty names, NUL bytes, absolute paths, backslashes, ``.``/``..``
    path parts and trailing slashes (which would make a directory entry).
    """
    if not name or "\x00" in name:
        raise ValueError(f"tar member name {name!r} is empty or holds a NUL byte")
    if name.startswith("/") or "\\" in name or name.endswith("/"):
        raise ValueError(f"tar member name {name!r} must be a relative file path")
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise ValueError(f"tar member name {name!r} has an empty, '.' or '..' path part")
    try:
        return name.encode("ascii")
    except UnicodeEncodeError:
        return name.encode("utf-8")


def _octal(value: int, width: int) -> bytes:
    """A numeric field as tarfile writes it: zero-padded octal digits and a NUL."""
    return b"%0*o\x00" % (width - 1, value)


def _padding(size: int) -> int:
    return -size % BLOCK


def member_span(name: bytes, size: int) -> int:
    """Bytes a member takes in the archive: header(s), data and padding."""
    if len(name) <= MAX_NAME and size <= MAX_SIZE and name.isascii():
        return BLOCK + size + _padding(size)
    return len(_pax_header(name, size, 0)) + size + _padding(size)


def archive_size(content_bytes: int) -> int:
    """Size of a finished archive whose members span ``content_bytes``."""
    end = content_bytes + 2 * BLOCK
    return end + (-end % RECORD)


def _pax_header(name: bytes, size: int, mtime: int) -> bytes:
    info = tarfile.TarInfo(name.decode("utf-8"))
    info.size, info.mtime, info.mode = size, mtime, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


class TarWriter:
    """Write members to a binary stream as a POSIX tar, tracking offsets and sha256.

    ``fileobj`` needs only ``write``; when it has a working ``fileno`` and is
    unbuffered, each sample goes out in a single ``os.writev`` call (no copies).
    The caller owns ``fileobj``: :meth:`close` writes the end-of-archive blocks
    but does not close it.
    """

    def __init__(self, fileobj: BinaryIO, mtime: int = 0) -> None:
        if not 0 <= mtime <= MAX_SIZE:
            raise ValueError(f"mtime {mtime} does not fit a tar header")
        self._file = fileobj
        self._hash = hashlib.sha256()
        self._offset = 0
        self._closed = False
        self._mtime = mtime
        # Header bytes after the name field and before the size field, and between
        # the size and checksum fields, never change: precompute them and their sums.
        self._mid = _octal(0o644, 8) + _octal(0, 8) + _octal(0, 8)
        self._mtime_field = _octal(mtime, 12)
        self._tail = b"0" + bytes(100) + b"ustar\x0000" + bytes(32 + 32 + 8 + 8 + 155 + 12)
        self._const_sum = sum(self._mid) + sum(self._mtime_field) + sum(b" " * 8) + sum(
            self._tail
        )
        self._writev = self._pick_writev(fileobj)

    @staticmethod
    def _pick_writev(fileobj: BinaryIO) -> Callable[[list[bytes]], None] | None:
        # Only an unbuffered OS file: writing past a buffer's back would reorder bytes.
        if not isinstance(fileobj, io.FileIO) or not hasattr(os, "writev"):
            return None
        fd = fileobj.fileno()
        iov_max = 1024

        def writev(parts: list[bytes]) -> None:
            for start in range(0, len(parts), iov_max):
                chunk = parts[start : start + iov_max]
                want = sum(len(p) for p in chunk)
                done = os.writev(fd, chunk)
                if done != want:  # a short write: finish the rest plainly
                    rest = b"".join(chunk)[done:]
                    while rest:
                        rest = rest[os.write(fd, rest) :]

        return writev

    @property
    def offset(self) -> int:
        """Bytes written so far (the offset where the next member starts)."""
        return self._offset

    def header(self, name: bytes, size: int) -> bytes:
        """The header block(s) of a regular-file member."""
        if len(name) > MAX_NAME or size > MAX_SIZE or not name.isascii():
            return _pax_header(name, size, self._mtime)
        name_field = name + bytes(MAX_NAME - len(name))
        size_field = _octal(size, 12)
        chksum = self._const_sum + sum(name) + sum(size_field)
        return b"".join((
            name_field, self._mid, size_field, self._mtime_field,
            b"%06o\x00 " % chksum, self._tail,
        ))

    def add_sample(self, members: Sequence[Member]) -> tuple[int, int]:
        """Write the members of one sample; return (offset of its first header, bytes spanned)."""
        if self._closed:
            raise ValueError("TarWriter is closed")
        parts: list[bytes] = []
        for name, data in members:
            encoded = validate_member_name(name)
            size = len(data)
            parts.append(self.header(encoded, size))
            if size:
                parts.append(data)
                pad = _padding(size)
                if pad:
                    parts.append(_ZEROS[:pad])
        return self._emit(parts)

    def add(self, name: str, data: bytes) -> tuple[int, int]:
        """Write one member; return (offset, bytes spanned)."""
        return self.add_sample([(name, data)])

    def _emit(self, parts: list[bytes]) -> tuple[int, int]:
        start = self._offset
        update = self._hash.update
        for part in parts:
            update(part)
        if self._writev is not None:
            self._writev(parts)
        else:
            write = self._file.write
            for part in parts:
                write(part)
        span = sum(len(p) for p in parts)
        self._offset += span
        return start, span

    def close(self) -> None:
        """Write the end-of-archive marker and pad to a whole record (as tarfile does)."""
        if self._closed:
            return
        end = archive_size(self._offset) - self._offset
        self._emit([_ZEROS[:end]])
        self._closed = True

    @property
    def size(self) -> int:
        """Bytes written so far; the archive's size once closed."""
        return self._offset

    def hexdigest(self) -> str:
        """sha256 of everything written so far (of the whole archive once closed)."""
        return self._hash.hexdigest()
