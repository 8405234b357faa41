"""The output folder: where shards, indexes, rejects and the manifest live.

```
ROOT/
  shards/UNIT.tar          one committed shard (absent for a unit with only rejects)
  index/UNIT.parquet       one row per sample; its footer describes the unit: the commit marker
  rejects/UNIT.parquet     one row per rejected input of the unit (absent when none)
  manifest.json            built from the index footers after all units are committed
  spec.resolved.json       the validated spec of the run
```

A root is a local path or any fsspec URL (``s3://bucket/run``, ``memory://run``).
Files being written carry a temporary name in the same folder,
``.NAME.tmp-<random>``, which readers and the manifest ignore and
:func:`relshard.shards.recovery.recover` deletes.
"""

from __future__ import annotations

import posixpath
import re
import secrets
from dataclasses import dataclass
from typing import Any

import fsspec
from fsspec import AbstractFileSystem
from fsspec.core import split_protocol
from fsspec.implementations.local import LocalFileSystem

SHARDS_DIR = "shards"
INDEX_DIR = "index"
REJECTS_DIR = "rejects"
MANIFEST_NAME = "manifest.json"
SPEC_RESOLVED_NAME = "spec.resolved.json"
SHARD_EXT = ".tar"
TABLE_EXT = ".parquet"
TMP_MARKER = ".tmp-"

UNIT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,150}$")


def validate_unit_name(name: str) -> str:
    """Unit names become file names: letters, digits, '_' and '-', not starting with '-'/'_'."""
    if not UNIT_RE.match(name):
        raise ValueError(
            f"unit name {name!r} must be 1-151 characters of A-Z, a-z, 0-9, '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def shard_relpath(unit: str) -> str:
    """``shards/UNIT.tar``: the shard of a unit, relative to the root."""
    return f"{SHARDS_DIR}/{unit}{SHARD_EXT}"


def index_relpath(unit: str) -> str:
    """``index/UNIT.parquet``: the index (and commit marker) of a unit."""
    return f"{INDEX_DIR}/{unit}{TABLE_EXT}"


def rejects_relpath(unit: str) -> str:
    """``rejects/UNIT.parquet``: the rejects of a unit."""
    return f"{REJECTS_DIR}/{unit}{TABLE_EXT}"


def is_tmp_name(basename: str) -> bool:
    """True for a temporary file name ``.NAME.tmp-<random>``."""
    return basename.startswith(".") and TMP_MARKER in basename


def tmp_name_for(relpath: str) -> str:
    """A fresh temporary name beside ``relpath``: ``DIR/.NAME.tmp-<random>``."""
    folder, base = posixpath.split(relpath)
    tmp = f".{base}{TMP_MARKER}{secrets.token_hex(6)}"
    return posixpath.join(folder, tmp) if folder else tmp


def unit_of(basename: str, ext: str) -> str | None:
    """The unit name of a committed file name such as ``UNIT.tar``; None for anything else."""
    if is_tmp_name(basename) or not basename.endswith(ext):
        return None
    unit = basename[: -len(ext)]
    return unit if UNIT_RE.match(unit) else None


def is_local(fs_or_url: AbstractFileSystem | str) -> bool:
    """True when a filesystem, or the one a URL or path names, is the local disk.

    A plain path and a ``file://`` (or ``local://``) URL are local; any other
    ``PROTOCOL://`` is not. The one answer to "is this local?" in the package.
    """
    if isinstance(fs_or_url, AbstractFileSystem):
        if isinstance(fs_or_url, LocalFileSystem):
            return True
        protocol = fs_or_url.protocol
        protocol = protocol if isinstance(protocol, str) else protocol[0]
        return protocol in ("file", "local")
    protocol, _ = split_protocol(str(fs_or_url))
    return protocol in (None, "file", "local")


def open_root(root: str, **storage_options: Any) -> tuple[AbstractFileSystem, str]:
    """The filesystem and path of an output root given as a local path or fsspec URL."""
    layout = OutputLayout.open(root, **storage_options)
    return layout.fs, layout.root


@dataclass(frozen=True)
class OutputLayout:
    """An output root on a filesystem, and the paths inside it."""

    fs: AbstractFileSystem
    root: str  # the root as a path on ``fs`` (no protocol)
    url: str  # the root as the user gave it

    @classmethod
    def open(cls, root: str | OutputLayout, **storage_options: Any) -> OutputLayout:
        """The layout of ``root``, a local path or an fsspec URL."""
        if isinstance(root, OutputLayout):
            return root
        fs, path = fsspec.url_to_fs(root, **storage_options)
        return cls(fs=fs, root=path.rstrip("/") or "/", url=root)

    @property
    def is_local(self) -> bool:
        """True on a local filesystem, where renames are atomic."""
        return is_local(self.fs)

    def path(self, relpath: str) -> str:
        """The full path on ``fs`` of a path relative to the root."""
        return posixpath.join(self.root, relpath)

    def inside(self, relpath: str) -> str:
        """:meth:`path` of a relative path read from data (an index row, a manifest), which
        must stay inside the root: no absolute path, no URL, no ``..`` part (ValueError)."""
        if (not relpath or relpath.startswith(("/", "\\")) or "://" in relpath
                or ".." in relpath.replace("\\", "/").split("/")):
            raise ValueError(f"{relpath[:200]!r} is not a path inside the output folder")
        return self.path(relpath)

    def ensure_dirs(self) -> None:
        """Create the root and its shards/, index/ and rejects/ folders (no-op on object stores)."""
        for sub in (SHARDS_DIR, INDEX_DIR, REJECTS_DIR):
            self.fs.makedirs(self.path(sub), exist_ok=True)

    def listdir(self, sub: str) -> list[str]:
        """Base names of the files in ``sub`` (relative to the root); [] when it does not exist."""
        folder = self.path(sub) if sub else self.root
        try:
            entries = self.fs.ls(folder, detail=True)
        except FileNotFoundError:
            return []
        names = [
            posixpath.basename(e["name"].rstrip("/")) for e in entries if e.get("type") == "file"
        ]
        return sorted(names)

    def exists(self, relpath: str) -> bool:
        return bool(self.fs.exists(self.path(relpath)))

    def size(self, relpath: str) -> int:
        return int(self.fs.size(self.path(relpath)))

    def remove(self, relpath: str) -> bool:
        """Delete a file if it exists; True when something was deleted."""
        try:
            self.fs.rm_file(self.path(relpath))
        except FileNotFoundError:
            return False
        return True

    def units(self) -> list[str]:
        """Names of the committed units (those with an index file), sorted."""
        names = (unit_of(b, TABLE_EXT) for b in self.listdir(INDEX_DIR))
        return sorted(n for n in names if n is not None)
