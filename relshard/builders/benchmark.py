"""``relshard build-benchmark OUT --to BENCH``: leak-free, never-empty splits as run outputs.

1. Reads the run's manifest and index, then every sample once (through the
   index byte ranges, one sample in memory at a time, see
   :mod:`relshard.builders.scan`): event windows' sequences and time spans,
   predicates and attribute categories, and pHashes of the stored frames.
2. Groups the samples (sha256, uri, event sequence, near-duplicate frames) and
   splits the groups (:mod:`relshard.builders.splits`), or, with
   ``split_by="time"``, cuts each event sequence by time.
3. Writes each split as an ordinary output folder, ``BENCH/SPLIT``, through the
   same :class:`~relshard.shards.ShardWriter` and commit protocol as a run
   (staged shards, index footers, then ``manifest.json``), so ``relshard verify``,
   ``relshard stats`` and ``ShardStream`` work on every split. A sample's record
   is validated again on the way (it is rebuilt from its members).
4. Writes ``BENCH/benchmark.json`` last (what a benchmark is: seed, shares, the
   source run, each grouping rule with its threshold and how many groups it
   merged, the leak checks and their results, per split the counts, strata,
   predicate and attribute-category distributions, key and shard hashes, and any
   warning), and ``BENCH/README.md``, the card generated from it.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections import Counter
from datetime import UTC, datetime
from typing import Any, Literal

import fsspec
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from relshard.builders.card import render_card
from relshard.builders.phash import near_duplicate_pairs
from relshard.builders.scan import (
    BenchmarkError,
    SampleReader,
    Scan,
    is_frame,
    read_index,
    scan_samples,
)
from relshard.builders.splits import (
    SplitError,
    assign_splits,
    assign_time_splits,
    check_no_leak,
    leak_groups,
    stratum,
)
from relshard.deps import require
from relshard.record import Attribute, Provenance, Relation, SourceInfo, Subject
from relshard.shards import OutputLayout, ShardWriter, build_manifest, read_manifest
from relshard.shards.commit import write_bytes_atomic, write_json_atomic
from relshard.shards.item import Frame, InputRef, SampleDraft, WorkItem
from relshard.shards.layout import MANIFEST_NAME
from relshard.shards.members import describe_validation_error

__all__ = ["BENCH_KIND", "BENCH_NAME", "BenchmarkError", "BenchmarkOptions", "build_benchmark"]

BENCH_KIND = "relshard-benchmark-v2"
BENCH_NAME = "benchmark.json"
CARD_NAME = "README.md"
CORE = ("json", "txt", "rel.txt")


class BenchmarkOptions(BaseModel):
    """How a benchmark is built (the ``build-benchmark`` options)."""

    model_config = ConfigDict(extra="forbid")

    fractions: dict[str, float] = Field(
        default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1})
    seed: int = 0
    max_subjects: int = Field(default=3, ge=1)
    samples_per_shard: int = Field(default=1000, ge=1)
    shard_max_bytes: int = Field(default=1 << 30, ge=1)
    split_by: Literal["group", "time"] = "group"
    min_per_split: int = Field(default=1, ge=0)
    allow_empty: bool = False
    near_duplicates: bool = True
    phash_threshold: int = Field(default=8, ge=0, le=24)
    phash_min_share: float = Field(default=0.5, gt=0, le=1)
    overwrite: bool = False


def _options(options: BenchmarkOptions | None, overrides: dict[str, Any]) -> BenchmarkOptions:
    base = (options or BenchmarkOptions()).model_dump()
    try:
        return BenchmarkOptions.model_validate({**base, **overrides})
    except ValidationError as exc:
        raise BenchmarkError(
            f"Invalid benchmark options: {describe_validation_error(exc)}.") from None


def _draft(key: str, members: dict[str, bytes]) -> tuple[SampleDraft, dict[str, Any]]:
    """A stored sample back into the draft the writer validates and writes again."""
    try:
        rec = json.loads(members["json"])
        source = SourceInfo.model_validate(rec["source"])
        frames = [Frame(members[s], source.frame_width or 1, source.frame_height or 1)
                  for s in sorted((s for s in members if is_frame(s)),
                                  key=lambda s: (s != "jpg", s))]
        draft = SampleDraft(
            key=rec["key"], source=source, frames=frames,
            subjects=[Subject.model_validate(s) for s in rec.get("subjects", [])],
            attributes=[Attribute.model_validate(a) for a in rec.get("attributes", [])],
            relations=[Relation.model_validate(r) for r in rec.get("relations", [])],
            caption=rec.get("caption", ""),
            relational_caption=rec.get("relational_caption", ""),
            provenance=Provenance.model_validate(rec["provenance"]),
            members={s: d for s, d in members.items() if s not in CORE and not is_frame(s)},
            warnings=list(rec.get("warnings", [])),
        )
    except (KeyError, TypeError, ValueError) as exc:
        detail = describe_validation_error(exc) if isinstance(exc, ValidationError) else exc
        raise BenchmarkError(f"Sample {key} does not follow the sample contract ({detail}); "
                             "run `relshard verify` on the output.") from None
    return draft, rec


def _write_split(reader: SampleReader, dest: str, name: str, rows: list[dict[str, Any]],
                 opts: BenchmarkOptions, extra: dict[str, Any]) -> dict[str, Any]:
    """Write ``rows``' samples to DEST/NAME through the ShardWriter; return its manifest."""
    by_input: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_input.setdefault(row["input_key"], []).append(row)
    writer = ShardWriter(dest, unit_prefix=name, max_samples=opts.samples_per_shard,
                         max_bytes=opts.shard_max_bytes)
    with writer:
        for input_key, members_rows in by_input.items():
            drafts: list[SampleDraft] = []
            extra_cols: dict[str, Any] = {}
            for row in members_rows:
                draft, rec = _draft(row["key"], reader.read(row))
                drafts.append(draft)
                extra_cols = rec.get("extra") or {}
            ref = InputRef(input_key=input_key, uri=members_rows[0]["uri"],
                           modality=drafts[0].source.modality, extra=extra_cols)
            writer.add(WorkItem(input=ref, samples=drafts))
    summary = writer.summary
    if summary.rejects_by_reason:
        raise BenchmarkError(
            f"{summary.inputs_rejected} inputs of the {name} split do not follow the sample "
            f"contract ({dict(summary.rejects_by_reason)}); see {dest}/rejects and run "
            "`relshard verify` on the output.")
    manifest = build_manifest(dest, name, extra.pop("spec_hash"), extra=extra)
    write_json_atomic(OutputLayout.open(dest), MANIFEST_NAME, manifest)
    return manifest


def _distribution(scan: Scan, members: list[int], which: str) -> dict[str, int]:
    values: Counter[str] = Counter()
    for i in members:
        values.update(getattr(scan, which)[i])
    return dict(values.most_common())


def _prepare_dest(dest: str, names: list[str], overwrite: bool) -> tuple[Any, str]:
    fs, root = fsspec.core.url_to_fs(dest)
    if fs.exists(posixpath.join(root, BENCH_NAME)):
        if not overwrite:
            raise BenchmarkError(f"{dest} already holds a benchmark; pick another folder or "
                                 "pass --overwrite.")
        fs.rm(posixpath.join(root, BENCH_NAME))
        for name in names:
            if fs.exists(posixpath.join(root, name)):
                fs.rm(posixpath.join(root, name), recursive=True)
    fs.makedirs(root, exist_ok=True)
    return fs, root


def build_benchmark(output: str, dest: str, options: BenchmarkOptions | None = None,
                    **overrides: Any) -> dict[str, Any]:
    """Build the benchmark of the run in ``output`` into ``dest``; return ``benchmark.json``.

    ``overrides`` are :class:`BenchmarkOptions` fields (``fractions=``, ``seed=``...).
    Raises :class:`BenchmarkError` (one sentence) for anything the user can fix.
    """
    from relshard import __version__

    opts = _options(options, overrides)
    layout = OutputLayout.open(output)
    if not layout.exists(MANIFEST_NAME):
        raise BenchmarkError(f"{output} holds no finished run (no manifest.json).")
    manifest = read_manifest(layout)
    index = read_index(layout, manifest)
    if not index:
        raise BenchmarkError(f"The run in {output} has no samples to split.")
    names = list(opts.fractions)
    if any(v < 0 for v in opts.fractions.values()) or sum(opts.fractions.values()) <= 0:
        raise BenchmarkError("The split shares must be non-negative with a positive sum.")
    if opts.near_duplicates:  # pHashes need imagehash (relshard[pipeline]): before any write
        require("imagehash", "pipeline")
    fs, root = _prepare_dest(dest, names, opts.overwrite)
    scan = scan_samples(layout, index, hash_frames=opts.near_duplicates)
    rows = scan.rows
    pairs = near_duplicate_pairs(scan.frames, scan.frames_per_sample, opts.phash_threshold,
                                 opts.phash_min_share) if opts.near_duplicates else []
    grouping = leak_groups(rows, pairs)
    warnings: list[str] = []
    time_report: dict[str, Any] = {}
    try:
        if opts.split_by == "time":
            splits, time_report = assign_time_splits(
                rows, opts.fractions, min_per_split=opts.min_per_split,
                allow_empty=opts.allow_empty, warnings=warnings)
            checks: dict[str, Any] = {"time_order": _check_time(rows, splits)}
        else:
            splits = assign_splits(rows, opts.fractions, opts.seed, opts.max_subjects,
                                   groups=grouping.groups, min_per_split=opts.min_per_split,
                                   allow_empty=opts.allow_empty, warnings=warnings)
            checks = check_no_leak(rows, splits, pairs)
    except SplitError as exc:
        raise BenchmarkError(str(exc).rstrip(".") + ".") from None
    with layout.fs.open(layout.path(MANIFEST_NAME), "rb") as f:
        manifest_sha = hashlib.sha256(f.read()).hexdigest()
    spec_hash = str(manifest.get("spec_hash", ""))
    group_of = {i: g for g, members in enumerate(grouping.groups) for i in members}
    info: dict[str, Any] = {}
    with SampleReader(layout) as reader:
        for name in names:
            members = sorted(splits.get(name, []))  # index order: sequential reads
            if not members and opts.fractions[name] > 0:
                warnings.append(f"The {name} split is empty.")
            written = _write_split(
                reader, posixpath.join(dest, name), name, [index[i] for i in members], opts,
                {"spec_hash": spec_hash, "benchmark": {"split": name,
                                                       "source_manifest_sha256": manifest_sha}})
            keys = "\n".join(sorted(rows[i].key for i in members)).encode()
            info[name] = {
                "manifest": f"{name}/{MANIFEST_NAME}",
                "samples": len(members),
                "groups": len({group_of[i] for i in members}),
                "sources": len({rows[i].uri for i in members}),
                "sequences": len({(rows[i].uri, rows[i].sequence) for i in members
                                  if rows[i].sequence is not None}),
                "strata": dict(sorted(Counter(
                    str(min(rows[i].n_subjects, opts.max_subjects)) for i in members).items())),
                "modalities": dict(Counter(scan.modalities[i] for i in members).most_common()),
                "predicates": _distribution(scan, members, "predicates"),
                "attribute_categories": _distribution(scan, members, "categories"),
                "keys_sha256": hashlib.sha256(keys).hexdigest(),
                "shards": [{"url": f"{name}/{e['url']}", "sha256": e["sha256"]}
                           for e in written["shardlist"]],
            }
    group_strata = Counter(str(stratum(rows, g, opts.max_subjects)) for g in grouping.groups)
    bench = {
        "__kind__": BENCH_KIND, "relshard_version": __version__,
        "seed": opts.seed, "fractions": opts.fractions, "split_by": opts.split_by,
        "min_per_split": opts.min_per_split, "allow_empty": opts.allow_empty,
        "max_subjects": opts.max_subjects,
        "source": {"output": output, "manifest_sha256": manifest_sha, "spec_hash": spec_hash,
                   "samples": len(rows), "name": manifest.get("name"),
                   "relshard_version": manifest.get("relshard_version")},
        "grouping": {
            "groups": len(grouping.groups), "group_strata": dict(sorted(group_strata.items())),
            "rules": [
                {"rule": "sha256", "threshold": None, "merged": grouping.merged["sha256"],
                 "what": "identical input content (sha256 of the input file)"},
                {"rule": "uri", "threshold": None, "merged": grouping.merged["uri"],
                 "what": "the same source uri (every clip/image of one input)"},
                {"rule": "sequence", "threshold": None, "merged": grouping.merged["sequence"],
                 "what": "the same event sequence (by uri and by sha256)"},
                {"rule": "near_duplicate", "enabled": opts.near_duplicates,
                 "threshold": opts.phash_threshold, "min_share": opts.phash_min_share,
                 "merged": grouping.merged["near_duplicate"], "pairs": len(pairs),
                 "hash": "imagehash.phash, 64 bits, whole frame and central 60%",
                 "frames_hashed": len(scan.frames), "flat_frames_skipped": scan.flat_frames,
                 "what": "stored frames within the Hamming threshold"},
            ],
        },
        "leak_checks": checks, **({"time_split": time_report} if time_report else {}),
        "warnings": warnings,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "splits": info,
    }
    bench_layout = OutputLayout(fs=fs, root=root, url=dest)
    write_bytes_atomic(bench_layout, CARD_NAME, render_card(bench).encode("utf-8"))
    write_json_atomic(bench_layout, BENCH_NAME, bench)
    return bench


def _check_time(rows: list[Any], splits: dict[str, list[int]]) -> dict[str, int]:
    """Within each sequence, every window of a later split starts after the earlier ones end."""
    order = [n for n in ("train", "val", "test") if n in splits] + [
        n for n in splits if n not in ("train", "val", "test")]
    last_end: dict[tuple[str, str | None], float] = {}
    checked = crossing = 0
    for name in order:
        ends: dict[tuple[str, str | None], float] = {}
        for i in splits[name]:
            seq = (rows[i].uri, rows[i].sequence)
            lo, hi = rows[i].span
            checked += 1
            if seq in last_end and lo < last_end[seq]:
                crossing += 1
            ends[seq] = max(ends.get(seq, hi), hi)
        for seq, end in ends.items():
            last_end[seq] = max(last_end.get(seq, end), end)
    if crossing:
        raise SplitError(f"{crossing} windows start before an earlier split's windows end")
    return {"checked": checked, "crossing": crossing}

