"""Bring an output folder back to its committed state before a (re)run, and list what is done.

A unit is committed when ``index/UNIT.parquet`` exists and its footer is
readable; the footer names the unit's shard and rejects file. Everything else
in the folder is debris of an interrupted run:

- temporary files ``.NAME.tmp-*`` (a write in progress when the run died);
- shard tars and rejects files that no committed index names (a kill between
  the renames of a commit, or a retried unit that now has no samples);
- index files that are not a relshard index at all (a truncated copy);
- committed units whose shard is missing or has another size than its index
  says (files changed behind relshard's back): the whole unit is withdrawn.

Deleting these loses nothing: their inputs are not in any committed index or
rejects file, so :func:`done_input_keys` does not list them and a resumed run
does them again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from relshard.shards.index import CorruptIndexError, UnitInfo, read_column, read_unit_info
from relshard.shards.layout import (
    INDEX_DIR,
    REJECTS_DIR,
    SHARD_EXT,
    SHARDS_DIR,
    TABLE_EXT,
    OutputLayout,
    index_relpath,
    is_tmp_name,
    unit_of,
)

log = logging.getLogger(__name__)


@dataclass
class RecoveryReport:
    """What :func:`recover` found and removed (paths relative to the root)."""

    removed_tmp: list[str] = field(default_factory=list)
    removed_orphans: list[str] = field(default_factory=list)
    removed_broken: list[str] = field(default_factory=list)  # files of withdrawn units
    committed_units: list[str] = field(default_factory=list)

    @property
    def removed(self) -> list[str]:
        return self.removed_tmp + self.removed_orphans + self.removed_broken

    @property
    def clean(self) -> bool:
        return not self.removed


def committed_units(layout: OutputLayout) -> dict[str, UnitInfo]:
    """The units whose index file is readable, by name (corrupt indexes are skipped)."""
    units = {}
    for name in layout.units():
        try:
            units[name] = read_unit_info(layout, name)
        except CorruptIndexError as exc:
            log.warning("%s", exc)
    return units


def _remove(layout: OutputLayout, relpath: str, into: list[str]) -> None:
    if layout.remove(relpath):
        into.append(relpath)


def _is_broken(layout: OutputLayout, info: UnitInfo) -> bool:
    if info.rejects is not None and not layout.exists(info.rejects):
        return True
    if info.shard is None:
        return False
    try:
        return layout.size(info.shard) != info.bytes
    except FileNotFoundError:
        return True


def recover(root: str | OutputLayout) -> RecoveryReport:
    """Delete temporary files, orphans and broken units under ``root``; report what went."""
    layout = OutputLayout.open(root)
    report = RecoveryReport()
    for sub in ("", SHARDS_DIR, INDEX_DIR, REJECTS_DIR):
        for base in layout.listdir(sub):
            if is_tmp_name(base):
                _remove(layout, f"{sub}/{base}" if sub else base, report.removed_tmp)

    units: dict[str, UnitInfo] = {}
    for name in layout.units():
        try:
            info = read_unit_info(layout, name)
        except CorruptIndexError as exc:
            log.warning("removing %s", exc)
            _remove(layout, index_relpath(name), report.removed_broken)
            continue
        if _is_broken(layout, info):
            log.warning("unit %s: its shard or rejects file is missing or the shard is not "
                        "%d bytes; withdrawing the unit", name, info.bytes)
            _remove(layout, index_relpath(name), report.removed_broken)
            for rel in (info.shard, info.rejects):
                if rel is not None:
                    _remove(layout, rel, report.removed_broken)
            continue
        units[name] = info

    wanted = {rel for info in units.values() for rel in (info.shard, info.rejects) if rel}
    for sub, ext in ((SHARDS_DIR, SHARD_EXT), (REJECTS_DIR, TABLE_EXT)):
        for base in layout.listdir(sub):
            rel = f"{sub}/{base}"
            if unit_of(base, ext) is not None and rel not in wanted:
                _remove(layout, rel, report.removed_orphans)

    report.committed_units = sorted(units)
    if not report.clean:
        log.info("recovery removed %d file(s) under %s", len(report.removed), layout.url)
    return report


def done_input_keys(root: str | OutputLayout) -> set[str]:
    """Input keys already written or rejected by committed units (a resumed run skips them).

    Reads only the ``input_key`` column of each committed unit's index and
    rejects file; files no committed index names are ignored.
    """
    layout = OutputLayout.open(root)
    done: set[str] = set()
    for info in committed_units(layout).values():
        done.update(read_column(layout, index_relpath(info.name), "input_key"))
        if info.rejects:
            done.update(read_column(layout, info.rejects, "input_key"))
    return done
