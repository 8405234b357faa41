"""List the inputs of a spec's sources: folders (recursive), globs and manifest files.

Every listed file is an input and will be accounted for (written or rejected),
except hidden files (names starting with '.'), which are counted and skipped.
Input keys come from the path relative to the source root (or the URI as written
in a manifest), so they are the same on every machine.

Listing streams: a folder of ten million files is walked lazily and a manifest
is read in record batches, so the driver never holds the whole listing.

No input takes the listing down. Local folders are walked with symlinks followed
once: a link to a file is an input under the link's name; a link to a folder is
walked after the real tree, unless that folder was already walked (a loop, or a
second way to the same files: counted in ``symlinks_skipped``); a dangling link
is counted in ``dangling_symlinks``. What cannot be listed becomes a listing
reject with its key (stage ``list``): ``symlink_loop`` (a link that resolves to
itself), ``permission_denied`` (a folder that cannot be read), ``vanished`` (gone
between the folder listing and its ``stat``).

The output is never read as input: :meth:`SourceLister.check` (called before a
run writes anything) refuses a source that lies inside the output, and the
walk leaves out the output folder when it lies inside a source
(``output_excluded``).
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import posixpath
import stat
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import fsspec
from fsspec.core import url_to_fs

from relshard.errors import SpecError
from relshard.record import make_input_key
from relshard.shards.item import InputRef
from relshard.shards.layout import is_local
from relshard.spec import SourceSpec

MANIFEST_SUFFIXES = (".csv", ".csv.gz", ".jsonl", ".jsonl.gz", ".ndjson", ".parquet")
_GLOB_CHARS = set("*?[")


LIST_STAGE = "list"


@dataclass
class ListingStats:
    listed: int = 0
    hidden_skipped: int = 0
    excluded: int = 0
    per_source: dict[str, int] = field(default_factory=dict)
    dangling_symlinks: int = 0
    symlinks_skipped: int = 0  # links to a folder that was walked already (loops included)
    other_skipped: int = 0  # sockets, FIFOs, devices
    output_excluded: list[str] = field(default_factory=list)  # folders left out: the output
    rejected: Counter[str] = field(default_factory=Counter)  # listing rejects by reason


@dataclass(frozen=True)
class ListingReject:
    """An entry the lister could not list: it is accounted for as a reject."""

    input_key: str
    uri: str
    reason: str  # symlink_loop | permission_denied | vanished | unlistable
    detail: str


def _reason_of(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "vanished"
    if isinstance(exc, PermissionError):
        return "permission_denied"
    if exc.errno == errno.ELOOP:
        return "symlink_loop"
    return "unlistable"


def _real(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A comparable form of ``path``: resolved locally, without trailing '/' elsewhere."""
    if is_local(fs):
        return os.path.realpath(path)
    stripped: str = fs._strip_protocol(path)
    return stripped.rstrip("/")


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _protocol(fs: fsspec.AbstractFileSystem) -> str:
    if is_local(fs):
        return "file"
    return fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]


def _full_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    return path if is_local(fs) else fs.unstrip_protocol(path)


def _keep(relpath: str, src: SourceSpec, stats: ListingStats) -> bool:
    parts = relpath.split("/")
    if any(p.startswith(".") for p in parts):
        stats.hidden_skipped += 1
        return False
    if src.include and not any(fnmatch.fnmatch(relpath, pat) for pat in src.include):
        stats.excluded += 1
        return False
    if any(fnmatch.fnmatch(relpath, pat) for pat in src.exclude):
        stats.excluded += 1
        return False
    return True


def _glob_root(pattern: str) -> str:
    parts = pattern.split("/")
    fixed = []
    for part in parts:
        if _GLOB_CHARS & set(part):
            break
        fixed.append(part)
    return "/".join(fixed)


def _parquet_manifest_rows(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[dict[str, Any]]:
    from relshard.shards.parquet_read import local_file, stream_batches

    # a local manifest is opened by pyarrow itself; a remote one, maybe too big to read
    # whole, is streamed through fsspec's file object (relshard.shards.parquet_read)
    with local_file(fs, path) if is_local(fs) else fs.open(path, "rb") as source:
        for batch in stream_batches(source, 65536):
            yield from batch.to_pylist()


def _manifest_rows(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson

    from relshard.events.reader import csv_batches
    from relshard.shards.parquet_read import arrow_buffer, native_input

    lower = path.lower()
    if lower.endswith(".parquet"):
        yield from _parquet_manifest_rows(fs, path)
        return
    # pyarrow is handed no Python object (relshard.shards.parquet_read says why; its CSV
    # and JSON readers read one from their own threads whatever use_threads says): a
    # local manifest, plain or .gz, is opened and decompressed by pyarrow itself
    native = native_input(fs, path)
    csv = lower.endswith((".csv", ".csv.gz"))
    block = 1 << 22
    conv = pacsv.ConvertOptions(strings_can_be_null=False)
    with native if native is not None else fs.open(path, "rb", compression="infer") as source:
        if csv:  # streamed (a Python file object: read here, Arrow parses copies)
            for batch in csv_batches(source, block, pacsv.ParseOptions(), conv):
                yield from batch.to_pylist()
        elif native is not None:
            yield from pajson.read_json(native).to_pylist()
        else:  # read whole, as read_json did, and parsed from Arrow's own copy
            yield from pajson.read_json(pa.BufferReader(arrow_buffer(source.read()))).to_pylist()


def _plain(value: Any) -> Any:
    """Make a manifest cell JSON-friendly (dates and decimals become strings)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


class SourceLister:
    """Iterates the inputs of a list of sources, checking keys for collisions.

    ``output``: the run's output root, never listed (see the module doc).
    ``on_reject``: called with each :class:`ListingReject` (default: kept in
    :attr:`rejects`).
    """

    def __init__(self, sources: list[SourceSpec], output: str | None = None,
                 on_reject: Callable[[ListingReject], None] | None = None) -> None:
        self.sources = sources
        self.stats = ListingStats()
        self._seen: dict[str, str] = {}
        self.current: SourceSpec | None = None
        self.rejects: list[ListingReject] = []
        self.on_reject = on_reject or self.rejects.append
        self._out: tuple[str, str] | None = None  # (protocol, real path) of the output
        self._out_id: tuple[int, int] | None = None  # of a local output, once it exists
        if output:
            fs, path = url_to_fs(output)
            self._out = (_protocol(fs), _real(fs, path))

    def check(self) -> None:
        """Refuse, before any work, sources that do not exist or lie inside the output."""
        for src in self.sources:
            fs, path = self._open(src)
            is_glob = bool(_GLOB_CHARS & set(src.path))
            where = _glob_root(path) if is_glob else path
            if not is_glob and not fs.exists(path):
                raise SpecError(f"Source path {src.path!r} does not exist: fix sources[].path.")
            if self._out and self._out[0] == _protocol(fs) and where and _inside(
                    _real(fs, where), self._out[1]):
                raise SpecError(
                    f"Source {src.path!r} lies inside the output folder, which would read the "
                    f"run's own shards as input; write the output somewhere else.")

    def _output_here(self, path: str, st: os.stat_result) -> bool:
        """Whether the local folder ``path`` (with its ``stat``) is the output folder."""
        if self._out is None or self._out[0] != "file":
            return False
        if self._out_id is not None:
            return (st.st_dev, st.st_ino) == self._out_id
        return os.path.realpath(path) == self._out[1]

    def _reject(self, src: SourceSpec, root: str, path: str, exc: OSError) -> None:
        rel = posixpath.relpath(path, root) if root else path
        parts = rel.split("/")
        if any(p.startswith(".") for p in parts if p not in (".", "..")):
            self.stats.hidden_skipped += 1
            return
        if any(fnmatch.fnmatch(rel, pat) for pat in src.exclude):
            self.stats.excluded += 1
            return
        reason = _reason_of(exc)
        self.stats.rejected[reason] += 1
        self.on_reject(ListingReject(
            input_key=make_input_key(rel, src.key_prefix), uri=path, reason=reason,
            detail=f"{type(exc).__name__}: {exc.strerror or exc}"[:4000]))

    def __iter__(self) -> Iterator[InputRef]:
        for src in self.sources:
            self.current = src  # the source of the refs being yielded (events need its columns)
            count = 0
            for ref in self._list_one(src):
                prior = self._seen.get(ref.input_key)
                if prior is not None:
                    if prior == ref.uri:
                        continue  # the same file reached twice (overlapping sources)
                    raise SpecError(
                        f"Inputs {prior!r} and {ref.uri!r} get the same key; give one of "
                        f"their sources a distinct key_prefix."
                    )
                self._seen[ref.input_key] = ref.uri
                count += 1
                self.stats.listed += 1
                yield ref
            self.stats.per_source[src.path] = count

    @staticmethod
    def _open(src: SourceSpec) -> tuple[fsspec.AbstractFileSystem, str]:
        try:
            fs, path = url_to_fs(src.path)
            return fs, path
        except (ImportError, ValueError) as exc:
            raise SpecError(
                f"Source {src.path!r} cannot be opened ({exc}); install the filesystem "
                f"package for its protocol or fix the URI."
            ) from None

    def _list_one(self, src: SourceSpec) -> Iterator[InputRef]:
        fs, path = self._open(src)
        is_glob = bool(_GLOB_CHARS & set(src.path))
        if is_glob:
            root = _glob_root(path)
            matches = sorted(fs.glob(path))
            files = [(m, -1) for m in matches if fs.isfile(m) and not self._in_output(fs, m)]
            yield from self._from_files(fs, root, files, src)
            return
        if not fs.exists(path):
            raise SpecError(f"Source path {src.path!r} does not exist: fix sources[].path.")
        if fs.isdir(path):
            walk = (self._walk_local(path, src) if is_local(fs)
                    else self._walk_remote(fs, path))
            yield from self._from_files(fs, path, walk, src)
        elif path.lower().endswith(MANIFEST_SUFFIXES) and src.modality != "events":
            yield from self._from_manifest(fs, path, src)
        else:  # a single media or event file
            yield from self._from_files(fs, posixpath.dirname(path), [(path, -1)], src)

    def _in_output(self, fs: fsspec.AbstractFileSystem, path: str) -> bool:
        if self._out is None or self._out[0] != _protocol(fs):
            return False
        if _inside(_real(fs, path), self._out[1]):
            self._note_excluded(self._out[1])
            return True
        return False

    def _note_excluded(self, where: str) -> None:
        if where not in self.stats.output_excluded:
            self.stats.output_excluded.append(where)

    def _walk_remote(self, fs: fsspec.AbstractFileSystem, root: str) -> Iterator[tuple[str, int]]:
        found = fs.find(root, detail=True)
        for path in sorted(found):
            info = found[path]
            if info.get("type", "file") == "file" and not self._in_output(fs, path):
                yield path, int(info.get("size") or 0)

    def _walk_local(self, root: str, src: SourceSpec) -> Iterator[tuple[str, int]]:
        """Files under ``root``, sorted, symlinks followed once (see the module doc)."""
        try:
            st = os.stat(root)
        except OSError as exc:
            self._reject(src, posixpath.dirname(root), root, exc)
            return
        visited = {(st.st_dev, st.st_ino)}
        if self._out is not None and self._out[0] == "file" and self._out_id is None:
            try:
                out = os.stat(self._out[1])
                self._out_id = (out.st_dev, out.st_ino)
            except OSError:
                pass  # not created yet: compared by resolved path
        stack: list[str] = [root]
        deferred: list[str] = []  # folders reached through a symlink
        while stack or deferred:
            if not stack:
                folder = deferred.pop(0)
                try:
                    fst = os.stat(folder)
                except OSError as exc:
                    self._reject(src, root, folder, exc)
                    continue
                if (fst.st_dev, fst.st_ino) in visited:
                    self.stats.symlinks_skipped += 1
                    continue
                visited.add((fst.st_dev, fst.st_ino))
                if self._output_here(folder, fst):
                    self._note_excluded(folder)
                    continue
                stack.append(folder)
                continue
            folder = stack.pop()
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError as exc:
                self._reject(src, root, folder, exc)
                continue
            subdirs = []
            for entry in entries:
                try:
                    found = self._entry(entry, visited)
                except OSError as exc:
                    self._reject(src, root, entry.path, exc)
                    continue
                kind, size = found
                if kind == "file":
                    yield entry.path, size
                elif kind == "dir":
                    subdirs.append(entry.path)
                elif kind == "link-dir":
                    deferred.append(entry.path)
            stack.extend(reversed(subdirs))

    def _entry(self, entry: os.DirEntry[str], visited: set[tuple[int, int]]) -> tuple[str, int]:
        """What a folder entry is: ("file", size), ("dir"|"link-dir"|"skip", 0)."""
        if entry.is_symlink():
            try:
                st = os.stat(entry.path)
            except FileNotFoundError:
                self.stats.dangling_symlinks += 1
                return "skip", 0
            if stat.S_ISDIR(st.st_mode):
                return "link-dir", 0
            if stat.S_ISREG(st.st_mode):
                return "file", st.st_size
            self.stats.other_skipped += 1
            return "skip", 0
        if entry.is_dir(follow_symlinks=False):
            st = entry.stat(follow_symlinks=False)
            ident = (st.st_dev, st.st_ino)
            if self._output_here(entry.path, st):
                self._note_excluded(entry.path)
                return "skip", 0
            if ident in visited:  # walked already through a symlink
                self.stats.symlinks_skipped += 1
                return "skip", 0
            visited.add(ident)
            return "dir", 0
        if entry.is_file(follow_symlinks=False):
            return "file", entry.stat(follow_symlinks=False).st_size
        self.stats.other_skipped += 1
        return "skip", 0

    def _from_files(self, fs: fsspec.AbstractFileSystem, root: str,
                    files: Any, src: SourceSpec) -> Iterator[InputRef]:
        root = root.rstrip("/")
        for path, size in files:
            rel = posixpath.relpath(path, root) if root else path
            if not _keep(rel, src, self.stats):
                continue
            yield InputRef(
                input_key=make_input_key(rel, src.key_prefix),
                uri=_full_uri(fs, path),
                modality=src.modality,
                size=size if size >= 0 else None,
                extra={},
            )

    def _from_manifest(self, fs: fsspec.AbstractFileSystem, path: str,
                       src: SourceSpec) -> Iterator[InputRef]:
        base = posixpath.dirname(path)
        for n, row in enumerate(_manifest_rows(fs, path)):
            uri = row.pop(src.uri_column, None)
            if uri is None:
                raise SpecError(
                    f"Manifest {src.path!r} has no {src.uri_column!r} column value in row "
                    f"{n + 1}; name the URI column with sources[].uri_column."
                )
            uri = str(uri).strip()
            if not uri or not _keep(uri, src, self.stats):
                continue
            if "://" in uri or uri.startswith("/"):
                full = uri
            else:
                full = _full_uri(fs, posixpath.join(base, uri))
            extra = {k: _plain(v) for k, v in row.items()}
            json.dumps(extra)  # fail early on anything not serializable
            yield InputRef(
                input_key=make_input_key(uri, src.key_prefix),
                uri=full,
                modality=src.modality,
                size=None,
                extra=extra,
            )
