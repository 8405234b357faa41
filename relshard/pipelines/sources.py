"""List the inputs of a spec's sources: folders (recursive), globs and manifest files.

Every listed file is an input and will be accounted for (written or rejected),
except hidden files (names starting with '.'), which are counted and skipped.
Input keys come from the path relative to the source root (or the URI as written
in a manifest), so they are the same on every machine.

Listing streams: a folder of ten million files is walked lazily and a manifest
is read in record batches, so the driver never holds the whole listing.
"""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import fsspec
from fsspec.core import url_to_fs

from relshard.errors import SpecError
from relshard.record import make_input_key
from relshard.spec import SourceSpec
from relshard.workers.item import InputRef

MANIFEST_SUFFIXES = (".csv", ".csv.gz", ".jsonl", ".jsonl.gz", ".ndjson", ".parquet")
_GLOB_CHARS = set("*?[")


@dataclass
class ListingStats:
    listed: int = 0
    hidden_skipped: int = 0
    excluded: int = 0
    per_source: dict[str, int] = field(default_factory=dict)


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def _full_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    return path if _is_local(fs) else fs.unstrip_protocol(path)


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


def _walk_local(root: str) -> Iterator[tuple[str, int]]:
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        subdirs = []
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.path)
            elif entry.is_file():
                try:
                    size = entry.stat().st_size
                except OSError:
                    size = -1  # unreadable: listed anyway, the decoder rejects it
                yield entry.path, size
        stack.extend(reversed(subdirs))


def _walk(fs: fsspec.AbstractFileSystem, root: str) -> Iterator[tuple[str, int]]:
    if _is_local(fs):
        yield from _walk_local(root)
        return
    found = fs.find(root, detail=True)
    for path in sorted(found):
        info = found[path]
        if info.get("type", "file") == "file":
            yield path, int(info.get("size") or 0)


def _glob_root(pattern: str) -> str:
    parts = pattern.split("/")
    fixed = []
    for part in parts:
        if _GLOB_CHARS & set(part):
            break
        fixed.append(part)
    return "/".join(fixed)


def _manifest_rows(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[dict[str, Any]]:
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    lower = path.lower()
    with fs.open(path, "rb", compression="infer") as fh:
        if lower.endswith(".parquet"):
            for batch in pq.ParquetFile(fh).iter_batches(batch_size=65536):
                yield from batch.to_pylist()
        elif lower.endswith((".csv", ".csv.gz")):
            opts = pacsv.ReadOptions(block_size=1 << 22)
            conv = pacsv.ConvertOptions(strings_can_be_null=False)
            for batch in pacsv.open_csv(fh, read_options=opts, convert_options=conv):
                yield from batch.to_pylist()
        else:
            yield from pajson.read_json(fh).to_pylist()


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
    """Iterates the inputs of a list of sources, checking keys for collisions."""

    def __init__(self, sources: list[SourceSpec]) -> None:
        self.sources = sources
        self.stats = ListingStats()
        self._seen: dict[str, str] = {}
        self.current: SourceSpec | None = None

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

    def _list_one(self, src: SourceSpec) -> Iterator[InputRef]:
        try:
            fs, path = url_to_fs(src.path)
        except (ImportError, ValueError) as exc:
            raise SpecError(
                f"Source {src.path!r} cannot be opened ({exc}); install the filesystem "
                f"package for its protocol or fix the URI."
            ) from None
        is_glob = bool(_GLOB_CHARS & set(src.path))
        if is_glob:
            root = _glob_root(path)
            matches = sorted(fs.glob(path))
            files = [(m, -1) for m in matches if fs.isfile(m)]
            yield from self._from_files(fs, root, files, src)
            return
        if not fs.exists(path):
            raise SpecError(f"Source path {src.path!r} does not exist: fix sources[].path.")
        if fs.isdir(path):
            yield from self._from_files(fs, path, _walk(fs, path), src)
        elif path.lower().endswith(MANIFEST_SUFFIXES) and src.modality != "events":
            yield from self._from_manifest(fs, path, src)
        else:  # a single media or event file
            yield from self._from_files(fs, posixpath.dirname(path), [(path, -1)], src)

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
