"""``relshard verify``: prove an output folder is whole before training on it.

Checks, each problem one line in :attr:`VerifyReport.problems`:

1. the manifest exists, parses, knows its schema version, and lists exactly the
   committed shards, each present with the bytes and sha256 it claims;
2. each tar parses and its members group into whole samples (``KEY.json``,
   ``KEY.txt``, ``KEY.rel.txt`` present, members of one key contiguous);
3. every record validates against the schema of its version (an unknown version
   is reported as such, not as a broken record);
4. index rows and shard members agree (key, offset, span, members; footer
   counts, bytes and sha256), and no shard lacks an index or the reverse;
5. no sample key appears twice across shards;
6. no input is claimed by both the index and the rejects ledger, except a reject that
   a later run superseded by writing the input (a retried reject,
   :mod:`relshard.shards.ledger`); a reject in the same run as the write, or after it,
   is a problem.

Shards are read once each, a few at a time (``workers``), streaming; memory holds
one shard's index rows at a time plus the set of all sample keys (for check 5).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from relshard.record import KNOWN_SCHEMA_VERSIONS, SampleRecord
from relshard.report.shardscan import ScannedSample, ShardScan, scan_shard
from relshard.report.tables import InspectError
from relshard.shards.index import CorruptIndexError, UnitInfo, read_unit_info
from relshard.shards.layout import (
    MANIFEST_NAME,
    SHARD_EXT,
    SHARDS_DIR,
    OutputLayout,
    index_relpath,
    unit_of,
)
from relshard.shards.ledger import read_ledger
from relshard.shards.members import describe_validation_error
from relshard.shards.parquet_read import read_table

RECORD_MODELS: dict[int, type[BaseModel]] = {1: SampleRecord}
INDEX_CHECK_COLUMNS = ["key", "input_key", "shard", "offset", "size", "members"]
MAX_PER_KIND = 50


def validate_record(data: dict[str, Any], key: str) -> str | None:
    """Why ``data`` is not a valid record of sample ``key``, or None when it is."""
    version = data.get("schema_version")
    if version not in KNOWN_SCHEMA_VERSIONS or version not in RECORD_MODELS:
        known = ", ".join(str(v) for v in KNOWN_SCHEMA_VERSIONS)
        return (f"{key}.json uses schema version {version!r}, which this relshard does not "
                f"know (it reads {known}); upgrade relshard")
    try:
        RECORD_MODELS[version].model_validate(data)
    except ValidationError as exc:
        return f"{key}.json does not validate: {describe_validation_error(exc)}"
    if data.get("key") != key:
        return f"{key}.json names key {data.get('key')!r}"
    return None


@dataclass
class VerifyReport:
    """What :func:`verify_output` found."""

    root: str
    shards: int = 0
    samples: int = 0
    units: int = 0
    superseded_rejects: int = 0  # rejects of inputs a later run wrote (retried): history
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json_dict(self) -> dict[str, Any]:
        return {"root": self.root, "ok": self.ok, "shards": self.shards,
                "samples": self.samples, "units": self.units,
                "superseded_rejects": self.superseded_rejects, "problems": self.problems}


@dataclass
class _UnitCheck:
    problems: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    input_keys: set[str] = field(default_factory=set)
    samples: int = 0
    scan: ShardScan | None = None


def _index_rows(layout: OutputLayout, unit: str) -> Iterator[dict[str, Any]]:
    table = read_table(layout.fs, layout.path(index_relpath(unit)), INDEX_CHECK_COLUMNS)
    yield from table.to_pylist()


def _check_unit(layout: OutputLayout, info: UnitInfo) -> _UnitCheck:
    """Scan a unit's shard and hold it against the unit's index rows and footer."""
    check = _UnitCheck()
    rows = {}
    for row in _index_rows(layout, info.name):
        check.input_keys.add(row["input_key"])
        if row["key"] in rows:
            check.problems.append(f"{index_relpath(info.name)}: key {row['key']!r} has two rows")
        if info.shard is not None and row["shard"] != info.shard:
            check.problems.append(f"{index_relpath(info.name)}: key {row['key']!r} names shard "
                                  f"{row['shard']!r}, not {info.shard!r}")
        rows[row["key"]] = row
    if info.shard is None:
        if rows:
            check.problems.append(f"{index_relpath(info.name)}: has rows but names no shard")
        return check
    found: set[str] = set()

    def on_sample(sample: ScannedSample) -> None:
        check.samples += 1
        check.keys.append(sample.key)
        where = f"{info.shard}: sample {sample.key!r}"
        if sample.record_error:
            check.problems.append(f"{info.shard}: {sample.record_error}")
        elif sample.record is not None:
            error = validate_record(sample.record, sample.key)
            if error:
                check.problems.append(f"{info.shard}: {error}")
        row = rows.get(sample.key)
        if row is None:
            check.problems.append(f"{where} is not in its index {index_relpath(info.name)}")
            return
        found.add(sample.key)
        got = (sample.offset, sample.size, sample.suffixes)
        want = (row["offset"], row["size"], list(row["members"] or []))
        if got != want:
            check.problems.append(f"{where}: index says offset/size/members {want}, "
                                  f"the shard has {got}")

    try:
        check.scan = scan_shard(layout, info.shard, on_sample)
    except FileNotFoundError:
        check.problems.append(f"{info.shard}: missing (its index {index_relpath(info.name)} "
                              "names it)")
        return check
    check.problems.extend(check.scan.problems)
    for key in sorted(set(rows) - found):
        check.problems.append(f"{index_relpath(info.name)}: key {key!r} is not in {info.shard}")
    scan = check.scan
    if (scan.bytes, scan.sha256, scan.nsamples) != (info.bytes, info.sha256, info.nsamples):
        check.problems.append(
            f"{info.shard}: the index footer says {info.nsamples} samples, {info.bytes} bytes, "
            f"sha256 {info.sha256}; the shard has {scan.nsamples}, {scan.bytes}, {scan.sha256}")
    return check


def _check_manifest(layout: OutputLayout, units: dict[str, UnitInfo],
                    scans: dict[str, ShardScan]) -> list[str]:
    if not layout.exists(MANIFEST_NAME):
        return [f"{MANIFEST_NAME} is missing (run `relshard verify --repair` to rebuild it)"]
    try:
        with layout.fs.open(layout.path(MANIFEST_NAME), "rb") as f:
            manifest = json.load(f)
        listed = {str(s["url"]): s for s in manifest.get("shardlist", [])}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return [f"{MANIFEST_NAME} does not parse as a relshard manifest ({exc})"]
    problems = []
    version = manifest.get("schema_version")
    if version not in KNOWN_SCHEMA_VERSIONS:
        problems.append(f"{MANIFEST_NAME} uses schema version {version!r}, which this relshard "
                        "does not know; upgrade relshard")
    committed = {u.shard for u in units.values() if u.shard and u.nsamples}
    for url in sorted(set(listed) - committed):
        problems.append(f"{MANIFEST_NAME} lists {url}, which no committed index describes")
    for url in sorted(committed - set(listed)):
        problems.append(f"{MANIFEST_NAME} does not list committed shard {url} (stale manifest)")
    for url, entry in sorted(listed.items()):
        scan = scans.get(url)
        if url in committed and scan is None and not layout.exists(url):
            problems.append(f"{MANIFEST_NAME} lists {url}, which is missing")
        if scan is not None and (entry.get("sha256"), entry.get("filesize")) != (
                scan.sha256, scan.bytes):
            problems.append(f"{url}: the manifest says {entry.get('filesize')} bytes, sha256 "
                            f"{entry.get('sha256')}; the file has {scan.bytes}, {scan.sha256}")
    return problems


def _cap(problems: list[str]) -> list[str]:
    """At most :data:`MAX_PER_KIND` lines per shard or file, then a count of the rest."""
    out: list[str] = []
    per: dict[str, int] = {}
    dropped: dict[str, int] = {}
    for line in problems:
        head = line.split(":", 1)[0]
        per[head] = per.get(head, 0) + 1
        if per[head] <= MAX_PER_KIND:
            out.append(line)
        else:
            dropped[head] = dropped.get(head, 0) + 1
    out.extend(f"{head}: {n} more problem(s) not shown" for head, n in dropped.items())
    return out


def verify_output(root: str | OutputLayout, workers: int = 4,
                  progress: Callable[[str, int], Callable[[int], None]] | None = None,
                  **storage_options: Any) -> VerifyReport:
    """Check the output at ``root``; the report lists every problem found.

    ``progress(description, total) -> advance(n)``: told the shard bytes to re-hash and
    advanced as each unit's shard is checked (a terminal's progress bar).
    """
    layout = OutputLayout.open(root, **storage_options)
    if not layout.fs.exists(layout.root):
        raise InspectError(f"Output {layout.url!r} does not exist.")
    report = VerifyReport(root=layout.url)
    units: dict[str, UnitInfo] = {}
    for name in layout.units():
        try:
            units[name] = read_unit_info(layout, name)
        except CorruptIndexError as exc:
            report.problems.append(str(exc))
    report.units = len(units)
    advance = (progress("verifying shards (bytes hashed)", sum(u.bytes for u in units.values()))
               if progress is not None else None)

    def check_unit(unit: UnitInfo) -> _UnitCheck:
        result = _check_unit(layout, unit)
        if advance is not None:
            advance(unit.bytes)
        return result

    with ThreadPoolExecutor(max(1, workers)) as pool:
        checks = dict(zip(units, pool.map(check_unit, units.values()), strict=True))
    seen_at: dict[str, str] = {}
    scans: dict[str, ShardScan] = {}
    for name, check in checks.items():
        report.problems.extend(check.problems)
        report.samples += check.samples
        if check.scan is not None:
            scans[check.scan.relpath] = check.scan
        shard = units[name].shard or name
        for key in check.keys:
            if key in seen_at and seen_at[key] != shard:
                report.problems.append(f"key {key!r} appears in both {seen_at[key]} and {shard}")
            seen_at.setdefault(key, shard)
    report.shards = len(scans)
    named = {u.shard for u in units.values() if u.shard}
    for base in layout.listdir(SHARDS_DIR):
        rel = f"{SHARDS_DIR}/{base}"
        if unit_of(base, SHARD_EXT) is not None and rel not in named:
            report.problems.append(f"{rel}: no index describes it (run `relshard verify "
                                   "--repair` to index it)")
    report.problems.extend(_check_manifest(layout, units, scans))
    ledger = read_ledger(layout, units)
    report.superseded_rejects = ledger.superseded
    report.problems.extend(
        f"input {key!r} is both in the index and in the rejects ledger ({reject_unit} "
        f"rejected it in or after run {write_run}, which wrote it; `relshard verify "
        f"--repair` drops the later reject)"
        for key, reject_unit, write_run in sorted(ledger.after_write))
    report.problems = _cap(report.problems)
    return report
