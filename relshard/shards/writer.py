"""The shard writer of one write task: WorkItems in, committed units out.

A *unit* is what one commit makes visible: ``shards/UNIT.tar`` (when it has
samples), ``rejects/UNIT.parquet`` (when it has rejects) and
``index/UNIT.parquet``, the commit marker, whose footer describes the unit.
Units are named ``f"{unit_prefix}-{seq:04d}"``.

Commit protocol ("nothing lost, nothing duplicated, no half-written shard
visible"):

1. the tar streams to a staged file while samples arrive; at commit the rejects
   and index tables are staged too (see :mod:`relshard.shards.commit`);
2. an index left by an earlier attempt at the same unit name is deleted when
   this attempt first touches the unit (before anything of it is staged), so
   the old unit stops being committed before any of its files is replaced;
3. tar, then rejects, then the index are published (renamed into place);
4. files of the earlier attempt that this one does not have are deleted.

A writer owns every unit of its prefix: ``unit_prefix`` must be unique per write
task *and per run* (a resumed run needs new prefixes, e.g. with a run id in
them), because writing a unit name replaces that unit, and :meth:`ShardWriter.close`
also withdraws the units of its prefix that it did not write itself (left by an
earlier attempt of the same task that rolled over more often).

A kill at any point leaves either the committed unit or files without an index,
which :func:`relshard.shards.recovery.recover` deletes (their inputs are then
redone). All samples of an input go into one shard: the writer rolls over to a
new unit *before* an input that would push a non-empty unit past
``max_samples`` or ``max_bytes``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

import pyarrow as pa

from relshard.errors import ShardWriteError
from relshard.record import SCHEMA_VERSION, Reject
from relshard.shards.commit import StagedFile, sync_dir
from relshard.shards.index import (
    INDEX_SCHEMA,
    META_KEY,
    REJECTS_SCHEMA,
    Columns,
    UnitInfo,
    record_columns,
    write_table,
)
from relshard.shards.item import InputRef, WorkItem
from relshard.shards.layout import (
    INDEX_DIR,
    REJECTS_DIR,
    SHARDS_DIR,
    OutputLayout,
    index_relpath,
    rejects_relpath,
    shard_relpath,
    validate_unit_name,
)
from relshard.shards.members import InvalidRecord, SampleMembers, item_members
from relshard.shards.tarwriter import MAX_NAME, TarWriter, archive_size, member_span

__all__ = ["ShardWriter", "UnitInfo", "WriteSummary"]

log = logging.getLogger(__name__)

WRITE_STAGE = "write"
WRITEBACK_STEP = 32 * 1024 * 1024  # start disk writeback of the shard every this many bytes


@dataclass
class WriteSummary:
    """What one writer committed."""

    inputs_written: int = 0
    samples_written: int = 0
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    units: list[UnitInfo] = field(default_factory=list)
    inputs_skipped: int = 0  # an input key seen a second time by this writer
    leaks: dict[str, int] = field(default_factory=dict)  # index ``leak`` value -> samples

    @property
    def inputs_rejected(self) -> int:
        return sum(self.rejects_by_reason.values())

    @property
    def bytes_written(self) -> int:
        return sum(u.bytes for u in self.units)


class _Unit:
    """The unit being filled: a streaming tar plus index and rejects rows in memory."""

    def __init__(self, layout: OutputLayout, name: str, mtime: int) -> None:
        self.layout = layout
        self.name = name
        self.mtime = mtime
        self.shard = shard_relpath(name)
        self.index = Columns(INDEX_SCHEMA)
        self.rejects = Columns(REJECTS_SCHEMA)
        self.ninputs = 0
        self._tar_file: StagedFile | None = None
        self._tar: TarWriter | None = None
        self._staged: list[StagedFile] = []
        self._claimed = False
        self._flushed = 0

    def _claim(self) -> None:
        """Withdraw an earlier attempt at this unit before anything of ours is written."""
        if not self._claimed:
            self.layout.remove(index_relpath(self.name))
            self._claimed = True

    @property
    def nsamples(self) -> int:
        return len(self.index)

    @property
    def tar_bytes(self) -> int:
        return self._tar.offset if self._tar else 0

    def add_input(self, item: WorkItem, samples: list[SampleMembers]) -> list[str]:
        """Add one input's samples; returns their ``leak`` index values that are set."""
        self._claim()
        if self._tar is None:
            self._tar_file = StagedFile(self.layout, self.shard, raw=True)
            self._staged.append(self._tar_file)
            self._tar = TarWriter(self._tar_file.file, mtime=self.mtime)
        leaks: list[str] = []
        for sample in samples:
            offset, size = self._tar.add_sample(sample.members)
            rec = sample.record
            prov = rec.provenance
            later = record_columns({"subjects": [{"source": s.source} for s in rec.subjects],
                                    "warnings": rec.warnings})
            if later["leak"]:
                leaks.append(later["leak"])
            self.index.append({
                "key": sample.key,
                "input_key": item.input.input_key,
                "uri": rec.source.uri,
                "shard": self.shard,
                "offset": offset,
                "size": size,
                "members": sample.suffixes,
                "modality": rec.source.modality,
                "n_frames": sample.n_frames,
                "n_subjects": len(rec.subjects),
                "n_attributes": len(rec.attributes),
                "n_relations": len(rec.relations),
                "caption_len": len(rec.caption),
                "rel_caption_len": len(rec.relational_caption),
                "backend": prov.backend,
                "model": prov.model,
                "prompt_version": prov.prompt_version,
                "sha256": rec.source.sha256,
                "schema_version": SCHEMA_VERSION,
                **later,
            })
        self.ninputs += 1
        if self._tar.offset - self._flushed >= WRITEBACK_STEP:
            self._tar_file.start_writeback(self._tar.offset)  # type: ignore[union-attr]
            self._flushed = self._tar.offset
        return leaks

    def add_reject(self, reject: Reject) -> None:
        self._claim()
        self.rejects.append(reject.model_dump())

    def commit(self) -> UnitInfo | None:
        """Stage what is missing, then publish tar, rejects and (last) index."""
        if self.nsamples == 0 and len(self.rejects) == 0:
            self.discard()
            return None
        tar_file, rejects_file = self._tar_file, None
        if self._tar is not None and tar_file is not None:
            self._tar.close()
            tar_file.finish()
        if len(self.rejects):
            rejects_file = self._stage_table(rejects_relpath(self.name), self.rejects.table())
        info = UnitInfo(
            name=self.name,
            nsamples=self.nsamples,
            ninputs=self.ninputs,
            nrejects=len(self.rejects),
            bytes=self._tar.size if self._tar else 0,
            sha256=self._tar.hexdigest() if self._tar else None,
            shard=self.shard if self._tar else None,
            rejects=rejects_file.relpath if rejects_file else None,
        )
        index_file = self._stage_table(
            index_relpath(self.name), self.index.table({META_KEY: info.to_json()})
        )
        for staged, folder in ((tar_file, SHARDS_DIR), (rejects_file, REJECTS_DIR)):
            if staged is not None:
                staged.publish()
                sync_dir(self.layout, folder)
        index_file.publish()
        sync_dir(self.layout, INDEX_DIR)
        if info.shard is None:
            self.layout.remove(self.shard)
        if info.rejects is None:
            self.layout.remove(rejects_relpath(self.name))
        self._staged.clear()
        return info

    def _stage_table(self, relpath: str, table: pa.Table) -> StagedFile:
        staged = StagedFile(self.layout, relpath)
        self._staged.append(staged)
        write_table(table, staged.file)
        staged.finish()
        return staged

    def discard(self) -> None:
        """Delete everything staged for this unit; committed files are left alone."""
        for staged in self._staged:
            try:
                staged.discard()
            except OSError as exc:  # best effort: recovery removes what is left
                log.warning("could not discard %s: %s", staged.staged_relpath, exc)
        self._staged.clear()


class ShardWriter:
    """Write the WorkItems of one write task into committed units under ``root``.

    ``root`` is a local path or an fsspec URL. ``on_commit`` is called with each
    unit's :class:`UnitInfo` right after the unit is committed. Use as a context
    manager, or call :meth:`close` (commit the last unit) or :meth:`abort`
    (discard it). I/O failures raise :class:`ShardWriteError`; problems of one
    input become reject rows.
    """

    def __init__(
        self,
        root: str,
        unit_prefix: str,
        max_samples: int,
        max_bytes: int,
        mtime: int = 0,
        on_commit: Callable[[UnitInfo], None] | None = None,
    ) -> None:
        if max_samples < 1 or max_bytes < 1:
            raise ValueError("max_samples and max_bytes must be at least 1")
        self.layout = OutputLayout.open(root)
        self.unit_prefix = validate_unit_name(unit_prefix)
        self.max_samples = max_samples
        self.max_bytes = max_bytes
        self.mtime = mtime
        self.on_commit = on_commit
        self.summary = WriteSummary()
        self._seq = 0
        self._seen_inputs: set[str] = set()
        self._seen_keys: set[str] = set()
        self._closed = False
        self._aborted = False
        self._warned_long_names = False
        try:
            self.layout.ensure_dirs()
        except OSError as exc:
            raise ShardWriteError(f"cannot create output folders under {root!r}: {exc}") from exc
        self._unit = self._new_unit()

    def _new_unit(self) -> _Unit:
        unit = _Unit(self.layout, f"{self.unit_prefix}-{self._seq:04d}", self.mtime)
        self._seq += 1
        return unit

    def add(self, item: WorkItem) -> None:
        """Write one input: its samples into the current shard, or a reject row."""
        if self._closed:
            raise ShardWriteError("ShardWriter.add() after close() or abort()")
        key = item.input.input_key
        if key in self._seen_inputs:
            log.warning("input %s reached the writer twice; keeping the first", key)
            self.summary.inputs_skipped += 1
            return
        self._seen_inputs.add(key)
        if item.reject is not None:
            self._guard(self._reject, item.reject)
            return
        try:
            samples = item_members(item)
            clash = next((s.key for s in samples if s.key in self._seen_keys), None)
            if clash is not None:
                raise InvalidRecord(f"sample key {clash!r} was already written", "duplicate_key")
        except InvalidRecord as exc:
            reject = Reject(input_key=key, uri=item.input.uri, stage=WRITE_STAGE,
                            reason=exc.reason, detail=exc.detail[:4000])
            self._guard(self._reject, reject)
            return
        self._guard(self._write_samples, item, samples)

    def _write_samples(self, item: WorkItem, samples: list[SampleMembers]) -> None:
        if not self._warned_long_names:
            longest = max(len(name.encode()) for s in samples for name, _ in s.members)
            if longest > MAX_NAME:
                self._warned_long_names = True
                log.warning("member names longer than %d bytes (sample %s) need pax headers, "
                            "which wids ignores: shorten the keys to read these shards with "
                            "wids", MAX_NAME, samples[0].key)
        unit = self._unit
        if unit.nsamples and self._would_overflow(unit, samples):
            self._commit()
            unit = self._unit
        for leak in unit.add_input(item, samples):
            self.summary.leaks[leak] = self.summary.leaks.get(leak, 0) + 1
        self._seen_keys.update(s.key for s in samples)
        self.summary.inputs_written += 1
        self.summary.samples_written += len(samples)

    def _would_overflow(self, unit: _Unit, samples: list[SampleMembers]) -> bool:
        if unit.nsamples + len(samples) > self.max_samples:
            return True
        extra = sum(
            member_span(name.encode("utf-8"), len(data))
            for s in samples
            for name, data in s.members
        )
        return archive_size(unit.tar_bytes + extra) > self.max_bytes

    def _reject(self, reject: Reject) -> None:
        self._unit.add_reject(reject)
        counts = self.summary.rejects_by_reason
        counts[reject.reason] = counts.get(reject.reason, 0) + 1

    def _commit(self) -> None:
        info = self._unit.commit()
        self._unit = self._new_unit()
        if info is not None:
            log.debug("committed unit %s: %d samples, %d rejects", info.name, info.nsamples,
                      info.nrejects)
            self.summary.units.append(info)
            if self.on_commit is not None:
                self.on_commit(info)

    def _guard(self, fn: Callable[..., None], *args: object) -> None:
        """Run ``fn``; on an I/O error discard the unit being written and raise ShardWriteError."""
        try:
            fn(*args)
        except (OSError, ValueError) as exc:
            self.abort()
            raise ShardWriteError(
                f"writing unit {self._unit.name} under {self.layout.url!r} failed: {exc}"
            ) from exc

    def close(self) -> WriteSummary:
        """Commit the last unit and return the summary; closing twice is harmless.

        Raises :class:`ShardWriteError` when the writer was aborted (by
        :meth:`abort` or by an earlier I/O failure): its last unit was discarded.
        """
        if self._aborted:
            raise ShardWriteError(
                f"ShardWriter for {self.unit_prefix!r} was aborted; its last unit was discarded"
            )
        if not self._closed:
            self._guard(self._commit)
            self._guard(self._drop_stale_units)
            self._closed = True
        return self.summary

    def _drop_stale_units(self) -> None:
        """Withdraw committed units of this prefix that this writer did not (re)write."""
        pattern = re.compile(rf"^{re.escape(self.unit_prefix)}-\d{{4,}}$")
        written = {u.name for u in self.summary.units}
        for name in self.layout.units():
            if pattern.match(name) and name not in written:
                log.warning("removing unit %s left by an earlier attempt", name)
                self.layout.remove(index_relpath(name))
                self.layout.remove(shard_relpath(name))
                self.layout.remove(rejects_relpath(name))

    def abort(self) -> None:
        """Discard the unit being written (committed units stay); the writer is then closed."""
        if not self._closed:
            self._closed = self._aborted = True
            self._unit.discard()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def commit_rejects(root: str, unit: str, rejects: list[Reject], modality: str,
                   mtime: int = 0) -> WriteSummary:
    """Commit ``rejects`` (found by the driver: listing errors, bad event rows) as one unit
    named ``unit`` of rejects only, through the same writer and commit protocol as a run."""
    writer = ShardWriter(root, unit, max_samples=1, max_bytes=1, mtime=mtime)
    for rej in rejects:
        writer.add(WorkItem(InputRef(rej.input_key, rej.uri, modality), reject=rej))
    return writer.close()
