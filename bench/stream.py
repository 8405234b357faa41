"""Read throughput: ShardStream against plain webdataset and raw shard bytes.

Builds (or takes with ``--manifest``) shards of N samples, each a ``KEY.json``
record, ``KEY.txt``, ``KEY.rel.txt`` and a ``--size``-pixel JPEG, with a
relshard-style index of byte spans (``--no-index``: the reader scans the tar
headers on first use instead), then times, in
the same process and on the same shards (page cache warmed first):

- ``raw bytes``: reading every shard file whole, no parsing (the ceiling);
- ``webdataset``: ``wds.WebDataset(urls).map(decode).batched(B)`` with the
  same decoding as relshard's (``json.loads``, UTF-8 text, OpenCV JPEG to RGB,
  ``numpy.load(allow_pickle=False)``);
- ``ShardStream``: ``relshard.ShardStream(manifest, batch_size=B)`` (plan,
  byte-range reads, tar parsing, the same decoding);

each in this process and through a DataLoader with ``--workers`` workers, plus
both without image decoding (``image="bytes"``) to show the reader's own cost.
Reports samples/s (median of ``--repeat``) and ratios: ShardStream / webdataset
(target >= 1.0) and ShardStream / raw bytes.

    python bench/stream.py [--samples 4000] [--per-shard 500] [--size 256] [--workers 2]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from relshard.shards.decoding import decode_member
from relshard.shards.tarread import scan_spans


def build(root: Path, samples: int, per_shard: int, size: int, index: bool) -> Path:
    """Shards of synthetic samples, their index (optional) and a manifest."""
    rng = np.random.default_rng(0)
    (root / "shards").mkdir(parents=True)
    shardlist = []
    base = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    for s, lo in enumerate(range(0, samples, per_shard)):
        rel = f"shards/b{s:04d}.tar"
        with tarfile.open(root / rel, "w", format=tarfile.PAX_FORMAT) as tar:
            for i in range(lo, min(lo + per_shard, samples)):
                img = np.roll(base, i, axis=1)
                img[: size // 4] = i % 256
                jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
                key = f"k{i:07d}"
                rec = {"key": key, "subjects": [{"id": "S1", "bbox": [0, 0, 10, 10]}],
                       "caption": f"sample {i}"}
                for suffix, data in (("json", json.dumps(rec).encode()),
                                     ("txt", f"sample {i}".encode()),
                                     ("rel.txt", b"{S1} wears {A1}"), ("jpg", jpg)):
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        shardlist.append({"url": rel, "nsamples": min(per_shard, samples - lo)})
    (root / "index").mkdir()
    for entry in shardlist if index else []:  # per-sample byte spans, as relshard's index
        with open(root / entry["url"], "rb") as f:
            spans = np.asarray(scan_spans(f)[0])
        pq.write_table(pa.table({"offset": spans[:, 0], "size": spans[:, 1]}),
                       root / "index" / (Path(entry["url"]).stem + ".parquet"))
    manifest = root / "manifest.json"
    data: dict[str, Any] = {"__kind__": "wids-shard-index-v1", "wids_version": 1,
                            "shardlist": shardlist}
    if index:
        data["spec_hash"] = "bench"  # marks a relshard output: the reader uses index/
    manifest.write_text(json.dumps(data))
    return manifest


def wds_decode(image: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def decode(sample: dict[str, Any]) -> dict[str, Any]:
        out = {"__key__": sample["__key__"]}
        for suffix, data in sample.items():
            if not suffix.startswith("__"):
                out[suffix] = decode_member(suffix, data, image)  # type: ignore[arg-type]
        return out
    return decode


def count(batches: Iterable[Any]) -> int:
    n = 0
    for batch in batches:
        n += len(batch["__key__"]) if isinstance(batch, dict) else len(batch)
    return n


def run_wds(urls: list[str], bsz: int, image: str, workers: int) -> int:
    import webdataset as wds
    from torch.utils.data import DataLoader

    ds = (wds.WebDataset(urls, shardshuffle=False, empty_check=False,
                         workersplitter=wds.split_by_worker, nodesplitter=None)
          .map(wds_decode(image)).batched(bsz, collation_fn=None, partial=True))
    if workers == 0:
        return count(ds)
    return count(DataLoader(ds, batch_size=None, num_workers=workers))


def run_stream(manifest: Path, bsz: int, image: str, workers: int) -> int:
    from relshard import ShardLoader, ShardStream

    stream = ShardStream(manifest, batch_size=bsz, image=image, remainder="pad")  # type: ignore[arg-type]
    return count(ShardLoader(stream, num_workers=workers))


def run_raw(urls: list[str]) -> int:
    total = 0
    for url in urls:
        total += len(Path(url).read_bytes())
    return total


def timed(fn: Callable[[], int], repeat: int) -> tuple[float, int]:
    times, n = [], 0
    for _ in range(repeat):
        t = time.perf_counter()
        n = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, help="read these shards instead of building some")
    ap.add_argument("--samples", type=int, default=4000)
    ap.add_argument("--per-shard", type=int, default=500)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-index", action="store_true", help="no index: scan the tar headers")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        manifest = args.manifest or build(Path(tmp), args.samples, args.per_shard, args.size,
                                          not args.no_index)
        from relshard.training.catalog import Catalog

        catalog = Catalog.open(manifest)
        urls, n = list(catalog.urls), catalog.num_samples
        t_raw, nbytes = timed(lambda: run_raw(urls), args.repeat)
        print(f"{n} samples in {len(urls)} shards, {nbytes / 1e6:.1f} MB; batch {args.batch}")
        print(f"{'raw bytes':28s} {n / t_raw:10.0f} samples/s  ({nbytes / t_raw / 1e6:.0f} MB/s)")
        for image in ("rgb", "bytes"):
            for workers in (0, args.workers):
                t_w, n_w = timed(lambda i=image, w=workers: run_wds(urls, args.batch, i, w),
                                 args.repeat)
                t_s, n_s = timed(
                    lambda i=image, w=workers: run_stream(manifest, args.batch, i, w), args.repeat)
                assert n_w == n and n_s >= n, (n_w, n_s, n)
                label = f"image={image} workers={workers}"
                print(f"{'webdataset ' + label:40s} {n / t_w:8.0f} samples/s")
                print(f"{'ShardStream ' + label:40s} {n / t_s:8.0f} samples/s   "
                      f"x{t_w / t_s:.2f} of webdataset, x{t_raw / t_s:.3f} of raw bytes")


if __name__ == "__main__":
    main()
