"""``relshard build-benchmark OUT --to BENCH``: leak-free splits as streamable shards.

Reads the run's manifest and index (never the media), splits the samples with
:mod:`relshard.builders.splits`, and copies each split's samples, as the raw
tar bytes of their members, into ``BENCH/SPLIT/shards/SPLIT-NNNN.tar`` with an
index and a manifest per split, so ``ShardStream("BENCH/train")`` reads it.
``BENCH/benchmark.json``, written last, records the seed, fractions, the source
run (manifest sha256, spec hash), and per split the counts (samples, groups,
sources, per subject-count stratum), the sha256 of each shard and of the
sorted key list.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from relshard.builders.splits import SampleRow, assign_splits, check_no_leak, leak_groups
from relshard.errors import RelshardError
from relshard.shards.layout import OutputLayout, index_relpath
from relshard.shards.manifest import MANIFEST_NAME, WIDS_KIND, WIDS_VERSION, read_manifest

BENCH_KIND = "relshard-benchmark-v1"
BENCH_NAME = "benchmark.json"
COLUMNS = ["key", "uri", "sha256", "n_subjects", "shard", "offset", "size", "modality"]


class BenchmarkError(RelshardError):
    """A benchmark cannot be built from the given output."""


def _read_rows(layout: OutputLayout, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for entry in manifest["shardlist"]:
        unit = posixpath.basename(entry["url"]).removesuffix(".tar")
        with layout.fs.open(layout.path(index_relpath(unit)), "rb") as f:
            table = pq.read_table(f, columns=COLUMNS)
        rows.extend(table.to_pylist())
    return rows


def _write_split(
    layout: OutputLayout, fs: Any, dest: str, name: str, rows: list[dict[str, Any]],
    spec_hash: str, per_shard: int,
) -> dict[str, Any]:
    """Copy ``rows``' sample bytes into DEST/NAME/shards; write its index and manifest."""
    folder = posixpath.join(dest, name)
    for sub in ("shards", "index"):
        fs.makedirs(posixpath.join(folder, sub), exist_ok=True)
    shardlist = []
    handles: dict[str, Any] = {}
    try:
        for s, lo in enumerate(range(0, len(rows), per_shard)):
            chunk, unit = rows[lo:lo + per_shard], f"{name}-{s:04d}"
            digest, offset, index = hashlib.sha256(), 0, []
            with fs.open(posixpath.join(folder, "shards", f"{unit}.tar"), "wb") as out:
                for row in chunk:
                    src = handles.get(row["shard"])
                    if src is None:
                        src = handles[row["shard"]] = layout.fs.open(layout.path(row["shard"]),
                                                                     "rb")
                    src.seek(row["offset"])
                    data = src.read(row["size"])
                    if len(data) != row["size"]:
                        raise BenchmarkError(
                            f"The shard {row['shard']} is shorter than its index says; "
                            "run `relshard run` again to repair the output.")
                    out.write(data)
                    digest.update(data)
                    index.append({**row, "shard": f"shards/{unit}.tar", "offset": offset})
                    offset += len(data)
                tail = b"\x00" * 1024
                out.write(tail)
                digest.update(tail)
            with fs.open(posixpath.join(folder, "index", f"{unit}.parquet"), "wb") as f:
                pq.write_table(pa.Table.from_pylist(index), f)
            shardlist.append({"url": f"shards/{unit}.tar", "nsamples": len(chunk),
                              "filesize": offset + 1024, "sha256": digest.hexdigest()})
    finally:
        for handle in handles.values():
            handle.close()
    manifest = {"__kind__": WIDS_KIND, "wids_version": WIDS_VERSION, "name": name,
                "spec_hash": spec_hash, "totals": {"samples": len(rows),
                                                   "shards": len(shardlist)},
                "shardlist": shardlist}
    with fs.open(posixpath.join(folder, MANIFEST_NAME), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def build_benchmark(
    output: str,
    dest: str,
    *,
    fractions: dict[str, float] | None = None,
    seed: int = 0,
    max_subjects: int = 3,
    samples_per_shard: int = 1000,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Build the benchmark of the run in ``output`` into ``dest``; return its manifest."""
    fractions = fractions or {"train": 0.8, "val": 0.1, "test": 0.1}
    layout = OutputLayout.open(output)
    if not layout.exists(MANIFEST_NAME):
        raise BenchmarkError(f"{output} holds no finished run (no manifest.json).")
    manifest = read_manifest(layout)
    fs, root = fsspec.core.url_to_fs(dest)
    if fs.exists(posixpath.join(root, BENCH_NAME)) and not overwrite:
        raise BenchmarkError(f"{dest} already holds a benchmark; pick another folder or "
                             "pass --overwrite.")
    rows = _read_rows(layout, manifest)
    if not rows:
        raise BenchmarkError(f"The run in {output} has no samples to split.")
    samples = [SampleRow(r["key"], r["uri"], r["sha256"], int(r["n_subjects"])) for r in rows]
    try:
        splits = assign_splits(samples, fractions, seed=seed, max_subjects=max_subjects)
        check_no_leak(samples, splits)
    except ValueError as exc:
        raise BenchmarkError(f"Cannot split the run: {exc}.") from None
    group_of = {i: g for g, members in enumerate(leak_groups(samples)) for i in members}
    spec_hash = str(manifest.get("spec_hash", ""))
    with layout.fs.open(layout.path(MANIFEST_NAME), "rb") as f:
        manifest_sha = hashlib.sha256(f.read()).hexdigest()
    info: dict[str, Any] = {}
    for name, members in splits.items():
        split_rows = [rows[i] for i in members]
        written = _write_split(layout, fs, root, name, split_rows, spec_hash, samples_per_shard)
        keys = "\n".join(r["key"] for r in split_rows).encode()
        info[name] = {
            "manifest": f"{name}/{MANIFEST_NAME}",
            "samples": len(members),
            "groups": len({group_of[i] for i in members}),
            "sources": len({samples[i].uri for i in members}),
            "strata": dict(sorted(Counter(
                str(min(samples[i].n_subjects, max_subjects)) for i in members).items())),
            "keys_sha256": hashlib.sha256(keys).hexdigest(),
            "shards": [{"url": f"{name}/{e['url']}", "sha256": e["sha256"]}
                       for e in written["shardlist"]],
        }
    bench = {
        "__kind__": BENCH_KIND, "seed": seed, "fractions": fractions,
        "max_subjects": max_subjects,
        "source": {"output": output, "manifest_sha256": manifest_sha, "spec_hash": spec_hash,
                   "samples": len(rows)},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "splits": info,
    }
    with fs.open(posixpath.join(root, BENCH_NAME), "w") as f:
        json.dump(bench, f, indent=1)
    return bench
