"""Where the samples are: the manifest's shard list and each shard's sample byte spans.

:class:`Catalog` reads a manifest (a local path, a folder holding
``manifest.json``, or any fsspec URL such as ``s3://bucket/run/manifest.json``)
and keeps the shard URLs and their sample counts: all the epoch plan needs.

:class:`ShardReader` lives in each reading process. It finds each shard's
sample spans lazily, the first time it reads from that shard: from the unit's
``index/UNIT.parquet`` (offset and size per sample) where the run wrote one,
else by scanning the tar headers once. It then reads a sample as one byte range
(``os.pread`` on local files, a ranged read through fsspec elsewhere), keeping a
few files open.

Nothing in a manifest or index is trusted. A shard URL must resolve inside the
manifest's folder (or URL prefix): ``../x``, ``/etc/x``, ``file:///...`` or
``http://...`` elsewhere raise :class:`ManifestError` naming the URL (the file is
never opened) unless the caller passes ``allow_external=True``. Sample counts
must be whole numbers that fit the shard. Index rows are checked before use: a
row with a negative, unaligned or tiny span makes the reader scan the tar
instead, and a span past the end of the shard file is never read (the stream
skips that sample as ``truncated_shard``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np

from relshard.errors import RelshardError
from relshard.shards.layout import SHARD_EXT, SHARDS_DIR, index_relpath, is_local, unit_of
from relshard.shards.tarread import BLOCK, scan_spans

log = logging.getLogger(__name__)


class ManifestError(RelshardError):
    """A manifest cannot be read or lists no shards."""


MAX_SHARD_SAMPLES = 2**32  # more samples than this in one shard is not a real count


def _is_absolute(url: str) -> bool:
    return "://" in url or url.startswith("/")


def _location(url: str) -> tuple[str, str]:
    """``(protocol, normalized path)`` of a URL or local path, for containment checks."""
    protocol, path = fsspec.core.split_protocol(url)
    if is_local(url):
        return "file", os.path.abspath(path)
    return protocol, posixpath.normpath("/" + path.lstrip("/"))


def _inside(url: str, base: str) -> bool:
    """Whether ``url`` lies inside the folder or URL prefix ``base``."""
    (proto, path), (base_proto, folder) = _location(url), _location(base)
    folder = folder.rstrip("/") + "/"
    return proto == base_proto and (path + "/").startswith(folder) and path + "/" != folder


def _count(value: Any, limit: int = MAX_SHARD_SAMPLES) -> int:
    """A whole number in ``[0, limit)`` from a manifest field; raises ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(value)
    n = int(value)
    if not 0 <= n < limit:
        raise ValueError(value)
    return n


@dataclass(frozen=True)
class Catalog:
    """A manifest's shards: absolute URLs, sample counts, and storage options."""

    manifest_url: str
    urls: tuple[str, ...]
    counts: tuple[int, ...]
    relshard: bool  # written by relshard (an index/UNIT.parquet sits beside each shard)
    storage_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, manifest: str | os.PathLike[str], allow_external: bool = False,
             **storage_options: Any) -> Catalog:
        """Read ``manifest`` (a file or a folder holding ``manifest.json``).

        ``allow_external``: accept shard URLs outside the manifest's folder (a
        ``wids`` index of shards hosted elsewhere); refused by default.
        """
        url = os.fspath(manifest)
        fs, path = fsspec.core.url_to_fs(url, **storage_options)
        try:
            if fs.isdir(path):
                url = url.rstrip("/") + "/manifest.json"
                path = path.rstrip("/") + "/manifest.json"
            with fs.open(path, "rb") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise ManifestError(f"No manifest at {url}; run `relshard run` first.") from None
        except (OSError, ValueError) as exc:
            raise ManifestError(f"The manifest {url} cannot be read: {exc}.") from None
        except RecursionError:
            raise ManifestError(f"The manifest {url} cannot be read: it nests too deep.") from None
        entries = data.get("shardlist") if isinstance(data, dict) else None
        if not isinstance(entries, list) or not entries:
            raise ManifestError(f"The manifest {url} lists no shards.")
        base = url.rsplit("/", 1)[0] if "/" in url else "."
        urls, counts = [], []
        for entry in entries:
            try:
                rel, n = entry["url"], _count(entry["nsamples"])
                if not isinstance(rel, str) or not rel:
                    raise TypeError(rel)
                filesize = entry.get("filesize")
                if filesize is not None and n > _count(filesize, 2**63) // BLOCK:
                    raise ValueError(n)
            except (KeyError, TypeError, ValueError, AttributeError):
                raise ManifestError(
                    f"The manifest {url} has a shard entry without a url and a plausible "
                    f"nsamples: {str(entry)[:200]}."
                ) from None
            shard = rel if _is_absolute(rel) else posixpath.join(base, rel)
            if not allow_external and not _inside(shard, base):
                raise ManifestError(
                    f"The manifest {url} lists the shard {rel[:300]!r}, which is outside its "
                    f"folder {base!r}; it was not opened. Pass allow_external=True to read "
                    f"shards from elsewhere.")
            urls.append(shard)
            counts.append(n)
        return cls(url, tuple(urls), tuple(counts), "spec_hash" in data, dict(storage_options))

    @property
    def num_samples(self) -> int:
        return sum(self.counts)

    def index_url(self, shard: int) -> str | None:
        """The relshard index of a shard (``ROOT/index/UNIT.parquet``), or None."""
        url = self.urls[shard]
        folder, base = url.rsplit("/", 1) if "/" in url else (".", url)
        unit = unit_of(base, SHARD_EXT)
        if not self.relshard or unit is None or not folder.endswith(SHARDS_DIR):
            return None
        root = folder[: -len(SHARDS_DIR)].rstrip("/") or "."
        return f"{root}/{index_relpath(unit)}"


def _implausible(spans: np.ndarray) -> int:
    """Index rows no tar can have: a negative or unaligned offset, a span under one block,
    or spans that overlap (the rows are sorted by offset)."""
    offsets, sizes = spans[:, 0], spans[:, 1]
    bad = (offsets < 0) | (offsets % BLOCK != 0) | (sizes < BLOCK)
    if len(spans) > 1:
        bad[1:] |= offsets[1:] - offsets[:-1] < sizes[:-1]
    return int(bad.sum())


class ShardReader:
    """Reads sample byte spans from a catalog's shards (one per process; not thread-safe)."""

    def __init__(self, catalog: Catalog, max_open: int = 8) -> None:
        self.catalog = catalog
        self.max_open = max_open
        self._spans: dict[int, np.ndarray] = {}
        self._sizes: dict[int, int] = {}
        self._open: OrderedDict[int, Any] = OrderedDict()
        self.missing: set[int] = set()  # shards found missing: not retried

    def spans(self, shard: int) -> np.ndarray:
        """``[n, 2]`` (offset, size) of the shard's samples in tar order."""
        if shard in self.missing:
            raise FileNotFoundError(self.catalog.urls[shard])
        found = self._spans.get(shard)
        if found is None:
            found = self._load_spans(shard)
            self._spans[shard] = found
        return found

    def spans_missing(self, shard: int) -> None:
        """Remember that a shard's file is missing, so its other samples fail fast."""
        self.missing.add(shard)

    def file_size(self, shard: int) -> int:
        """The shard file's size in bytes (raises ``FileNotFoundError`` when it is missing)."""
        size = self._sizes.get(shard)
        if size is None:
            fs, path = fsspec.core.url_to_fs(self.catalog.urls[shard],
                                             **self.catalog.storage_options)
            found = fs.size(path)  # None where a server does not say (HTTP without length)
            size = self._sizes[shard] = int(found) if found is not None else sys.maxsize
        return size

    def _load_spans(self, shard: int) -> np.ndarray:
        total = self.file_size(shard)
        index = self.catalog.index_url(shard)
        if index is not None:
            from relshard.shards.parquet_read import read_table

            try:
                fs, path = fsspec.core.url_to_fs(index, **self.catalog.storage_options)
                table = read_table(fs, path, ["offset", "size"])
                spans = np.stack([table.column("offset").to_numpy(),
                                  table.column("size").to_numpy()], axis=1).astype(np.int64)
                spans = spans.reshape(-1, 2)[np.argsort(spans[:, 0], kind="stable")]
                bad = _implausible(spans)
                if not bad:
                    return spans
                log.warning("index %s has %d implausible row(s); scanning the shard instead",
                            index, bad)
            except (OSError, KeyError, ValueError, TypeError, IndexError,
                    NotImplementedError) as exc:
                log.warning("index %s unusable (%s); scanning the shard instead", index,
                            type(exc).__name__)
        fs, path = fsspec.core.url_to_fs(self.catalog.urls[shard], **self.catalog.storage_options)
        with fs.open(path, "rb", block_size=1 << 20, cache_type="readahead") as f:
            spans_list, complete = scan_spans(f)
        if not complete:
            log.warning("shard %s ends early (%d bytes); it holds %d whole samples",
                        self.catalog.urls[shard], total, len(spans_list))
        return np.asarray(spans_list, dtype=np.int64).reshape(-1, 2)

    def _handle(self, shard: int) -> Any:
        handle = self._open.get(shard)
        if handle is not None:
            self._open.move_to_end(shard)
            return handle
        url = self.catalog.urls[shard]
        fs, path = fsspec.core.url_to_fs(url, **self.catalog.storage_options)
        if is_local(fs):
            handle = os.open(path, os.O_RDONLY)
        else:
            handle = fs.open(path, "rb", block_size=1 << 22, cache_type="readahead")
        self._open[shard] = handle
        while len(self._open) > self.max_open:
            _, old = self._open.popitem(last=False)
            self._close(old)
        return handle

    @staticmethod
    def _close(handle: Any) -> None:
        if isinstance(handle, int):
            os.close(handle)
        else:
            handle.close()

    def read(self, shard: int, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` of a shard (fewer when the file is truncated).

        Never asks for more than the file holds there (a lying index cannot make it
        allocate more than the file's size).
        """
        if offset < 0 or size < 0:
            raise ValueError(f"a negative byte range ({offset}, {size})")
        size = max(0, min(size, self.file_size(shard) - offset))
        if size == 0:
            return b""
        handle = self._handle(shard)
        if isinstance(handle, int):
            return os.pread(handle, size, offset)
        handle.seek(offset)
        return bytes(handle.read(size))

    def close(self) -> None:
        while self._open:
            _, handle = self._open.popitem()
            self._close(handle)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # the interpreter may be shutting down
            self.close()
