"""Staged files: written out of sight, then made visible whole, in an order the caller picks.

On a local filesystem a file is written under a temporary name in its final
folder (``DIR/.NAME.tmp-<random>``), flushed and fsynced, and
:meth:`StagedFile.publish` renames it into place with :func:`os.replace`, which
is atomic and replaces an earlier file of the same name.

On an object store (any non-local fsspec filesystem) a PUT only becomes
visible once the upload completes, and a rename would be a full copy, so the
file is written straight to its final name and published by closing it (the
upload completes on close). ``memory://`` behaves like an object store here,
except that fsspec's memory filesystem shows a file from the moment it is
opened; it is meant for tests.

This is the only module that knows the difference; the writer and the manifest
just stage, publish in order, or discard.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, BinaryIO

from relshard.shards.layout import OutputLayout, tmp_name_for

LOCAL_BUFFER = 1 << 20


class StagedFile:
    """One file on its way to ``relpath`` (relative to the layout root).

    ``raw=True`` opens a local file unbuffered (an :class:`io.FileIO`), for
    callers that issue large writes themselves (the tar writer uses writev).
    """

    def __init__(self, layout: OutputLayout, relpath: str, *, raw: bool = False) -> None:
        self.layout = layout
        self.relpath = relpath
        self.local = layout.is_local
        self.staged_relpath = tmp_name_for(relpath) if self.local else relpath
        self._final = layout.path(relpath)
        self._path = layout.path(self.staged_relpath)
        self._done = False
        self._advised = 0
        self.file: BinaryIO
        if self.local:
            os.makedirs(os.path.dirname(self._path), exist_ok=True)
            self.file = open(self._path, "wb", buffering=0 if raw else LOCAL_BUFFER)  # noqa: SIM115
        else:
            self.file = layout.fs.open(self._path, "wb")

    def start_writeback(self, upto: int) -> None:
        """Ask the OS to start writing bytes ``[.., upto)`` to disk now, without waiting.

        Local files only (elsewhere a no-op). Spreading the writeback over the
        write keeps the final fsync short and big shards out of the page cache.
        """
        if not self.local or upto <= self._advised or not hasattr(os, "posix_fadvise"):
            return
        try:
            self.file.flush()
            os.posix_fadvise(self.file.fileno(), self._advised, upto - self._advised,
                             os.POSIX_FADV_DONTNEED)
        except OSError:  # only a hint: some filesystems refuse it
            return
        self._advised = upto

    def finish(self) -> None:
        """Make the written bytes durable at the staging place (local: flush, fsync, close)."""
        if self.local and not self.file.closed:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()

    def publish(self) -> None:
        """Make the file visible under its final name, replacing any earlier one."""
        if self._done:
            raise ValueError(f"{self.relpath} was already published or discarded")
        if self.local:
            self.finish()
            os.replace(self._path, self._final)
        else:
            self.file.close()  # completes the upload
        self._done = True

    def discard(self) -> None:
        """Throw the staged bytes away; never touches an earlier published file."""
        if self._done:
            return
        self._done = True
        if self.local:
            self.file.close()
            with contextlib.suppress(FileNotFoundError):
                os.remove(self._path)
        else:
            discard = getattr(self.file, "discard", None)
            if callable(discard):
                discard()  # aborts a pending multipart upload where supported


def sync_dir(layout: OutputLayout, sub: str) -> None:
    """fsync a local folder so that renames in it survive a crash (no-op elsewhere)."""
    if not layout.is_local or not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(layout.path(sub), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(layout: OutputLayout, relpath: str, data: bytes) -> None:
    """Write a small file so that readers see either the old or the whole new content."""
    staged = StagedFile(layout, relpath)
    try:
        staged.file.write(data)
        staged.publish()
    except BaseException:
        staged.discard()
        raise


def write_json_atomic(layout: OutputLayout, relpath: str, obj: Any) -> None:
    """Write ``obj`` as indented UTF-8 JSON with :func:`write_bytes_atomic`."""
    text = json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    write_bytes_atomic(layout, relpath, text.encode("utf-8"))
