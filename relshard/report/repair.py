"""``relshard verify --repair``: rebuild the index and manifest from the shards themselves.

For when ``index/`` or ``manifest.json`` was lost, or is stale (a shard copied in
or replaced by hand). Each committed shard ``shards/UNIT.tar`` is read once; its
samples' records give the index rows exactly as the writer makes them (offset,
span, members, counts, caption lengths, provenance), and the scan gives the
unit footer (samples, bytes, sha256). A unit's rejects file is kept and named in
the rebuilt footer. An index that names a shard which is gone is withdrawn (or
kept as a rejects-only unit when its rejects file exists). Finally the manifest is
rebuilt from the footers, keeping the run's name and spec hash.

Samples whose record does not parse or validate cannot be indexed; they are
listed in the report, and ``verify`` keeps reporting them. Shards are never
modified in place.

Then what two runs on one output wrote twice is removed, keeping the earliest
committed copy of each sample key, and rejects committed after a write of their
input are dropped (:mod:`relshard.report.dedupe`; a unit that held later copies
is rebuilt under a new name).
"""

from __future__ import annotations

import json
import posixpath
import time
from dataclasses import dataclass, field
from typing import Any

from relshard.report.dedupe import remove_duplicates
from relshard.report.shardscan import ScannedSample, scan_shard
from relshard.report.verify import INDEX_CHECK_COLUMNS, validate_record
from relshard.shards.commit import StagedFile, sync_dir
from relshard.shards.index import (
    INDEX_SCHEMA,
    META_KEY,
    Columns,
    CorruptIndexError,
    UnitInfo,
    read_unit_info,
    record_columns,
    write_table,
)
from relshard.shards.layout import (
    INDEX_DIR,
    MANIFEST_NAME,
    REJECTS_DIR,
    SHARD_EXT,
    SHARDS_DIR,
    SPEC_RESOLVED_NAME,
    TABLE_EXT,
    OutputLayout,
    index_relpath,
    rejects_relpath,
    unit_of,
)
from relshard.shards.manifest import RESERVED_KEYS, build_manifest, write_manifest
from relshard.shards.parquet_read import read_metadata, read_table


@dataclass
class RepairReport:
    """What :func:`repair_output` rewrote (paths relative to the root)."""

    rewritten: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped_samples: list[str] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    manifest_rewritten: bool = False
    deduplicated: list[str] = field(default_factory=list)  # units rebuilt without copies
    duplicates_removed: int = 0  # samples whose key an earlier unit holds
    rejects_removed: int = 0  # reject rows committed after a write of their input

    def to_json_dict(self) -> dict[str, Any]:
        return {"rewritten": self.rewritten, "unchanged": self.unchanged,
                "manifest_rewritten": self.manifest_rewritten,
                "removed": self.removed, "skipped_samples": self.skipped_samples,
                "deduplicated": self.deduplicated,
                "duplicates_removed": self.duplicates_removed,
                "rejects_removed": self.rejects_removed,
                "totals": self.manifest.get("totals", {})}


def index_row(sample: ScannedSample, shard: str) -> dict[str, Any]:
    """The index row of a scanned sample with a valid record (as the writer makes it)."""
    rec = sample.record or {}
    source, prov = rec.get("source") or {}, rec.get("provenance") or {}
    return {
        "key": sample.key, "input_key": source.get("input_key"), "uri": source.get("uri"),
        "shard": shard, "offset": sample.offset, "size": sample.size,
        "members": list(sample.suffixes), "modality": source.get("modality"),
        "n_frames": sample.n_frames, "n_subjects": len(rec.get("subjects") or []),
        "n_attributes": len(rec.get("attributes") or []),
        "n_relations": len(rec.get("relations") or []),
        "caption_len": len(rec.get("caption") or ""),
        "rel_caption_len": len(rec.get("relational_caption") or ""),
        "backend": prov.get("backend"), "model": prov.get("model"),
        "prompt_version": prov.get("prompt_version"), "sha256": source.get("sha256"),
        "schema_version": rec.get("schema_version"),
        **record_columns(rec),
    }


def _rows_of_rejects(layout: OutputLayout, unit: str) -> int:
    return int(read_metadata(layout.fs, layout.path(rejects_relpath(unit))).num_rows)


def _existing(layout: OutputLayout, unit: str) -> tuple[UnitInfo | None, Any]:
    if not layout.exists(index_relpath(unit)):
        return None, None
    try:
        info = read_unit_info(layout, unit)
        table = read_table(layout.fs, layout.path(index_relpath(unit)), INDEX_CHECK_COLUMNS)
    except (CorruptIndexError, OSError, ValueError):
        return None, None
    return info, table


def _publish_index(layout: OutputLayout, info: UnitInfo, rows: Columns) -> None:
    staged = StagedFile(layout, index_relpath(info.name))
    try:
        write_table(rows.table({META_KEY: info.to_json()}), staged.file)
        staged.finish()
        staged.publish()
    except BaseException:
        staged.discard()
        raise
    sync_dir(layout, INDEX_DIR)


def _repair_unit(layout: OutputLayout, unit: str, has_shard: bool, report: RepairReport) -> None:
    rows = Columns(INDEX_SCHEMA)
    rejects = rejects_relpath(unit) if layout.exists(rejects_relpath(unit)) else None
    nsamples, nbytes, sha = 0, 0, None
    shard = f"{SHARDS_DIR}/{unit}{SHARD_EXT}" if has_shard else None
    if shard is not None:
        def on_sample(sample: ScannedSample) -> None:
            error = sample.record_error or (
                validate_record(sample.record, sample.key) if sample.record else "no record")
            if error:
                report.skipped_samples.append(f"{shard}: {error}")
            else:
                rows.append(index_row(sample, shard))

        scan = scan_shard(layout, shard, on_sample)
        nsamples, nbytes, sha = len(rows), scan.bytes, scan.sha256
    relpath = index_relpath(unit)
    if shard is None and rejects is None:
        if layout.remove(relpath):
            report.removed.append(relpath)
        return
    info = UnitInfo(
        name=unit, nsamples=nsamples, ninputs=len(set(rows.data["input_key"])),
        nrejects=_rows_of_rejects(layout, unit) if rejects else 0, bytes=nbytes, sha256=sha,
        shard=shard, rejects=rejects,
    )
    old_info, old_table = _existing(layout, unit)
    if old_info == info and old_table is not None and old_table.equals(
            rows.table().select(INDEX_CHECK_COLUMNS)):
        report.unchanged.append(relpath)
        return
    _publish_index(layout, info, rows)
    report.rewritten.append(relpath)


_COMPARED = ("__kind__", "schema_version", "name", "spec_hash", "totals", "shardlist")


def _run_identity(layout: OutputLayout) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
    """The run's name, spec hash and extra manifest keys, and the old manifest if readable."""
    for relpath in (MANIFEST_NAME, SPEC_RESOLVED_NAME):
        if not layout.exists(relpath):
            continue
        try:
            with layout.fs.open(layout.path(relpath), "rb") as f:
                data = json.load(f)
        except ValueError:
            continue
        if relpath == MANIFEST_NAME and data.get("spec_hash"):
            extra = {k: v for k, v in data.items() if k not in RESERVED_KEYS}
            return str(data.get("name") or ""), str(data["spec_hash"]), extra, data
        spec = data.get("spec") if isinstance(data.get("spec"), dict) else data
        if data.get("spec_hash") and spec.get("name"):
            return str(spec["name"]), str(data["spec_hash"]), {}, {}
    return posixpath.basename(layout.root), "unknown", {}, {}


def repair_output(root: str | OutputLayout, **storage_options: Any) -> RepairReport:
    """Rebuild every index file and the manifest of ``root`` from its shards.

    Holds the output's lease while it works (:mod:`relshard.shards.lease`): a repair
    never runs beside a pipeline run writing the same output, and a run never starts
    beside a repair (either is refused with one sentence naming the holder).
    """
    from relshard.shards.lease import OutputLease

    layout = OutputLayout.open(root, **storage_options)
    lease = OutputLease(layout, "repair-" + time.strftime("%Y%m%d%H%M%S", time.gmtime()))
    lease.acquire()
    try:
        return _repair_leased(layout)
    finally:
        lease.release()


def _repair_leased(layout: OutputLayout) -> RepairReport:
    report = RepairReport()
    shard_units = {u for u in (unit_of(b, SHARD_EXT) for b in layout.listdir(SHARDS_DIR)) if u}
    reject_units = {u for u in (unit_of(b, TABLE_EXT) for b in layout.listdir(REJECTS_DIR)) if u}
    layout.ensure_dirs()
    for unit in sorted(shard_units | reject_units | set(layout.units())):
        _repair_unit(layout, unit, unit in shard_units, report)
    report.deduplicated, report.duplicates_removed, report.rejects_removed = \
        remove_duplicates(layout)
    name, spec_hash, extra, old = _run_identity(layout)
    manifest = build_manifest(layout, name, spec_hash, extra)
    same = {k: manifest[k] for k in _COMPARED} == {k: old.get(k) for k in _COMPARED}
    if old and same:
        report.manifest = old
    else:
        write_manifest(layout, manifest)
        report.manifest, report.manifest_rewritten = manifest, True
    return report
