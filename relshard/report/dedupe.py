"""``verify --repair``, part two: remove what two runs on one output wrote twice.

Before outputs had a lease (:mod:`relshard.shards.lease`), two runs started on one
folder both wrote every input. Repair keeps the earliest committed copy of each
sample key (commit order: run id, then unit name, :mod:`relshard.shards.ledger`)
and removes the later copies:

- a unit holding later copies is rebuilt under a new name (``UNIT-d1``, ``-d2`` ...):
  its shard is copied without those samples (each sample's byte span as it is,
  then the end-of-archive padding), its index rows follow with their new offsets,
  its rejects file is copied; the new unit is committed (index last) before the old
  one is withdrawn. A kill in between leaves both committed: the copies are back
  and the next repair removes them again; nothing is lost;
- a reject committed in the same run as a write of its input, or after it, is
  dropped from its rejects file (a reject *before* a write is a retried input's
  history and stays).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from relshard.shards.commit import StagedFile, sync_dir
from relshard.shards.index import META_KEY, UnitInfo, write_table
from relshard.shards.layout import (
    INDEX_DIR,
    REJECTS_DIR,
    SHARDS_DIR,
    OutputLayout,
    index_relpath,
    rejects_relpath,
    shard_relpath,
)
from relshard.shards.ledger import read_ledger, run_of
from relshard.shards.parquet_read import read_table
from relshard.shards.recovery import committed_units
from relshard.shards.tarwriter import archive_size

COPY_CHUNK = 8 << 20
_DEDUP_RE = re.compile(r"^(.*)-d(\d+)$")


def _next_name(unit: str, taken: Iterable[str]) -> str:
    m = _DEDUP_RE.match(unit)
    base, n = (m.group(1), int(m.group(2))) if m else (unit, 0)
    names = set(taken)
    while True:
        n += 1
        name = f"{base}-d{n}"
        if name not in names:
            return name


def _read_index(layout: OutputLayout, unit: str) -> pa.Table:
    return read_table(layout.fs, layout.path(index_relpath(unit)))


def _copy_spans(layout: OutputLayout, src: str, spans: list[tuple[int, int]],
                dst: StagedFile) -> tuple[list[int], int, str]:
    """Copy byte spans of ``src`` into ``dst`` as a tar; (new offsets, size, sha256)."""
    sha = hashlib.sha256()
    offsets, pos = [], 0
    with layout.fs.open(layout.path(src), "rb") as fh:
        for offset, size in spans:
            offsets.append(pos)
            fh.seek(offset)
            left = size
            while left:
                chunk = fh.read(min(left, COPY_CHUNK))
                if not chunk:
                    raise OSError(f"{src} ends inside the sample at byte {offset}")
                dst.file.write(chunk)
                sha.update(chunk)
                left -= len(chunk)
            pos += size
    tail = bytes(archive_size(pos) - pos)
    dst.file.write(tail)
    sha.update(tail)
    return offsets, pos + len(tail), sha.hexdigest()


def _rebuild_unit(layout: OutputLayout, info: UnitInfo, keep: list[bool],
                  taken: set[str]) -> str | None:
    """Commit ``info`` minus the rows not kept under a new name; withdraw the old unit."""
    table = _read_index(layout, info.name)
    kept = table.filter(pa.array(keep, pa.bool_()))
    new = _next_name(info.name, taken)
    taken.add(new)
    staged: list[StagedFile] = []
    try:
        shard, nbytes, sha = None, 0, None
        if kept.num_rows and info.shard is not None:
            tar = StagedFile(layout, shard_relpath(new))
            staged.append(tar)
            order = sorted(range(kept.num_rows), key=lambda i: kept["offset"][i].as_py())
            kept = kept.take(pa.array(order, pa.int64()))
            spans = list(zip(kept["offset"].to_pylist(), kept["size"].to_pylist(), strict=True))
            offsets, nbytes, sha = _copy_spans(layout, info.shard, spans, tar)
            shard = shard_relpath(new)
            kept = kept.set_column(kept.schema.get_field_index("offset"), "offset",
                                   pa.array(offsets, pa.int64()))
            kept = kept.set_column(kept.schema.get_field_index("shard"), "shard",
                                   pa.array([shard] * kept.num_rows, pa.string()))
            tar.finish()
        rejects = None
        if info.rejects:
            with layout.fs.open(layout.path(info.rejects), "rb") as f:
                blob = f.read()
            rej = StagedFile(layout, rejects_relpath(new))
            staged.append(rej)
            rej.file.write(blob)
            rej.finish()
            rejects = rejects_relpath(new)
        if shard is None and rejects is None:
            _withdraw(layout, info)
            return None
        new_info = UnitInfo(name=new, nsamples=kept.num_rows if shard else 0,
                            ninputs=len(set(kept["input_key"].to_pylist())) if shard else 0,
                            nrejects=info.nrejects, bytes=nbytes, sha256=sha, shard=shard,
                            rejects=rejects)
        index = StagedFile(layout, index_relpath(new))
        staged.append(index)
        body = kept if shard else kept.slice(0, 0)
        write_table(body.replace_schema_metadata({META_KEY: new_info.to_json()}), index.file)
        index.finish()
        for f, folder in zip(staged[:-1], (SHARDS_DIR if shard else REJECTS_DIR, REJECTS_DIR),
                             strict=False):
            f.publish()
            sync_dir(layout, folder)
        index.publish()
        sync_dir(layout, INDEX_DIR)
    except BaseException:
        for f in staged:
            f.discard()
        raise
    _withdraw(layout, info)
    return new


def _withdraw(layout: OutputLayout, info: UnitInfo) -> None:
    layout.remove(index_relpath(info.name))  # uncommits first
    for rel in (info.shard, info.rejects):
        if rel:
            layout.remove(rel)


def _drop_rejects(layout: OutputLayout, info: UnitInfo, keys: set[str]) -> int:
    """Rewrite the unit's rejects file without the rows of ``keys`` (footer follows);
    returns the rows dropped."""
    assert info.rejects is not None
    table = read_table(layout.fs, layout.path(info.rejects))
    mask = pc.invert(pc.is_in(table["input_key"], value_set=pa.array(sorted(keys), pa.string())))
    left = table.filter(mask)
    index = _read_index(layout, info.name)
    dropped: int = table.num_rows - left.num_rows
    if left.num_rows == 0 and info.shard is None:
        _withdraw(layout, info)
        return dropped
    rejects = info.rejects if left.num_rows else None
    if rejects is not None:
        staged = StagedFile(layout, rejects)
        write_table(left, staged.file)
        staged.publish()
        sync_dir(layout, REJECTS_DIR)
    new_info = UnitInfo(name=info.name, nsamples=info.nsamples, ninputs=info.ninputs,
                        nrejects=left.num_rows, bytes=info.bytes, sha256=info.sha256,
                        shard=info.shard, rejects=rejects)
    staged = StagedFile(layout, index_relpath(info.name))
    write_table(index.replace_schema_metadata({META_KEY: new_info.to_json()}), staged.file)
    staged.publish()
    sync_dir(layout, INDEX_DIR)
    if rejects is None:
        layout.remove(info.rejects)
    return dropped


def remove_duplicates(layout: OutputLayout) -> tuple[list[str], int, int]:
    """Keep the earliest copy of every sample key and drop rejects after writes.

    Returns (units rebuilt or withdrawn, samples removed, reject rows removed)."""
    units = committed_units(layout)
    taken = set(units)
    seen: set[str] = set()
    changed: list[str] = []
    samples_removed = 0
    for name in sorted(units, key=lambda n: (run_of(n), n)):
        info = units[name]
        if info.shard is None:
            continue
        keys = read_table(layout.fs, layout.path(index_relpath(name)), ["key"])["key"].to_pylist()
        keep = [k not in seen for k in keys]
        seen.update(keys)
        if not all(keep):
            samples_removed += keep.count(False)
            _rebuild_unit(layout, info, keep, taken)
            changed.append(name)
    units = committed_units(layout)
    ledger = read_ledger(layout, units)
    by_unit: dict[str, set[str]] = {}
    for key, unit, _ in ledger.after_write:
        by_unit.setdefault(unit, set()).add(key)
    rejects_removed = 0
    for unit, keys in sorted(by_unit.items()):
        rejects_removed += _drop_rejects(layout, units[unit], keys)
        changed.append(unit)
    return changed, samples_removed, rejects_removed
