"""Shard writing throughput: relshard's ShardWriter against a plain ``tarfile`` write.

Builds N samples (a JPEG-like payload of 50-100 KB plus a small record each) in
memory, then times, in the same process and into the same kind of folder:

- ``tarfile``: the standard library writing the already-built member bytes
  (``KEY.json``, ``KEY.txt``, ``KEY.rel.txt``, ``KEY.jpg``) into shards of
  ``--per-shard`` samples, no hashing, no fsync, no index;
- ``TarWriter``: relshard's tar writer on the same member bytes (sha256 included);
- ``ShardWriter``: the whole write path from WorkItems: record validation and
  JSON, tar with sha256, parquet index, fsync and the rename commit.

Each is run ``--repeat`` times in alternating order, each after an ``os.sync()``
so that no run pays for an earlier run's writeback; the median wall time is
reported as MB/s of member payload (plus CPU time), with ShardWriter's ratio to
tarfile (target: >= 0.8). Note that only ShardWriter makes its data durable
(fsync) before it returns; the baselines leave it in the page cache.

    python bench/write.py [--samples 5000] [--per-shard 1000] [--repeat 3] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from relshard.record import Provenance, SourceInfo, Subject
from relshard.shards import ShardWriter
from relshard.shards.item import Frame, InputRef, SampleDraft, WorkItem
from relshard.shards.members import item_members
from relshard.shards.tarwriter import TarWriter

PROV = Provenance(backend="heuristic", model=None, relshard_version="0.1.0")


def make_items(n: int, seed: int = 0) -> list[WorkItem]:
    """N single-image inputs with a JPEG-like payload of 50-100 KB and one subject."""
    blob = os.urandom(100_000 + n)  # sliced per sample: distinct bytes, little setup time
    items = []
    for i in range(n):
        size = 50_000 + (i * 7919 + seed) % 50_000
        jpeg = b"\xff\xd8\xff\xe0" + blob[i : i + size - 6] + b"\xff\xd9"
        key = f"bench-{i:07d}"
        uri = f"file:///bench/{key}.jpg"
        src = SourceInfo(uri=uri, input_key=key, modality="image", sha256=f"{i:064x}",
                         width=640, height=480)
        sample = SampleDraft(
            key=key, source=src, frames=[Frame(jpeg, 640, 480)],
            subjects=[Subject(id="S1", kind="person", bbox=[0.1, 0.2, 0.4, 0.9])],
            caption=f"a person standing on the left, sample {i}",
            relational_caption="{S1} stands on the left", provenance=PROV,
        )
        items.append(WorkItem(InputRef(key, uri, "image"), samples=[sample]))
    return items


def run_tarfile(samples: list[list[tuple[str, bytes]]], out: Path, per_shard: int) -> None:
    for start in range(0, len(samples), per_shard):
        path = out / f"plain-{start // per_shard:04d}.tar"
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
            for members in samples[start : start + per_shard]:
                for name, data in members:
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime, info.mode = len(data), 0, 0o644
                    info.uname = info.gname = ""
                    tf.addfile(info, io.BytesIO(data))


def run_tarwriter(samples: list[list[tuple[str, bytes]]], out: Path, per_shard: int) -> None:
    for start in range(0, len(samples), per_shard):
        with open(out / f"tw-{start // per_shard:04d}.tar", "wb", buffering=0) as f:
            writer = TarWriter(f)
            for members in samples[start : start + per_shard]:
                writer.add_sample(members)
            writer.close()
            writer.hexdigest()


def run_shardwriter(items: list[WorkItem], out: Path, per_shard: int) -> None:
    with ShardWriter(str(out), "bench", per_shard, 2**40) as writer:
        for item in items:
            writer.add(item)


def timed(fn: Callable[[Path], None], base: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one run into a fresh folder, after flushing earlier runs' data."""
    out = Path(tempfile.mkdtemp(dir=base))
    try:
        os.sync()  # earlier runs' dirty pages must not slow this one down
        w0, c0 = time.perf_counter(), time.process_time()
        fn(out)
        return time.perf_counter() - w0, time.process_time() - c0
    finally:
        shutil.rmtree(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=5000)
    ap.add_argument("--per-shard", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dir", default=None, help="folder for the outputs (default: system tmp)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    items = make_items(args.samples)
    samples = [[m for sm in item_members(item) for m in sm.members] for item in items]
    payload = sum(len(d) for s in samples for _, d in s)
    print(f"{args.samples} samples, {payload / 1e6:.0f} MB of members, "
          f"{args.per_shard} per shard (setup {time.perf_counter() - t0:.1f}s)")

    runs: dict[str, Callable[[Path], None]] = {
        "tarfile": lambda out: run_tarfile(samples, out, args.per_shard),
        "TarWriter": lambda out: run_tarwriter(samples, out, args.per_shard),
        "ShardWriter": lambda out: run_shardwriter(items, out, args.per_shard),
    }
    walls: dict[str, list[float]] = {name: [] for name in runs}
    cpus: dict[str, list[float]] = {name: [] for name in runs}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        run_shardwriter(items[:10], Path(tmp), args.per_shard)  # warm-up: lazy imports
        for rep in range(args.repeat):
            order = list(runs) if rep % 2 == 0 else list(reversed(runs))
            for name in order:
                wall, cpu = timed(runs[name], Path(tmp))
                walls[name].append(wall)
                cpus[name].append(cpu)
    rate = {name: payload / statistics.median(ts) / 1e6 for name, ts in walls.items()}
    for name, ts in walls.items():
        print(f"{name:12s} {rate[name]:6.0f} MB/s  wall median {statistics.median(ts):.2f} s "
              f"(min {min(ts):.2f}), CPU median {statistics.median(cpus[name]):.2f} s")
    ratio = rate["ShardWriter"] / rate["tarfile"]
    print(f"ratio ShardWriter/tarfile: {ratio:.2f}x (target >= 0.8)")
    print(f"ratio TarWriter/tarfile:   {rate['TarWriter'] / rate['tarfile']:.2f}x")


if __name__ == "__main__":
    main()
