"""End-to-end throughput: images/s through `relshard run`, per detector and 1 vs 2 CPUs.

    python bench/e2e.py [--images 240] [--side 1024] [--backends centerface,opencv]

Makes N JPEG photos (crops, flips and colour shifts of the bundled real photos,
so detection has real faces to find), then runs the full pipeline (decode ->
detect -> heuristic annotate -> shards) on a fresh local Ray, each run in its own
process: every detector backend with num_cpus=2, and the first one also with
num_cpus=1. Ray's start-up is excluded; everything from listing to the manifest
is timed. Prints the rates, each backend's ratio to the last one (``opencv``:
Haar frontal + profile and HOG, the default before CenterFace; target >= 5x) and
the 1 -> 2 CPU speed-up (target >= 1.6x on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PHOTOS = sorted((REPO / "examples" / "assets").glob("*.jpg"))


def make_images(folder: Path, n: int, side: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    bases = [np.asarray(Image.open(p).convert("RGB")) for p in PHOTOS]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = bases[i % len(bases)]
        h, w = img.shape[:2]
        y0, x0 = int(rng.integers(0, h // 8 + 1)), int(rng.integers(0, w // 8 + 1))
        crop = img[y0:, x0:]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        shift = rng.integers(-20, 21, size=3)
        crop = np.clip(crop.astype(np.int16) + shift, 0, 255).astype(np.uint8)
        scale = side / max(crop.shape[:2])
        size = (int(crop.shape[1] * scale), int(crop.shape[0] * scale))
        Image.fromarray(crop).resize(size, Image.BILINEAR).save(folder / f"img{i:05d}.jpg",
                                                               quality=90)


def child(src: str, out: str, cpus: int, backend: str) -> None:
    from relshard.pipelines import ray_cluster
    from relshard.pipelines.runner import run_pipeline
    from relshard.spec import parse_spec

    ray_cluster.connect(None, cpus)
    spec = parse_spec({
        "name": "bench", "sources": [{"path": src}], "detect": {"backend": backend},
        "output": {"path": out, "shard_max_samples": 1000},
        "runtime": {"progress": False},
    })
    t0 = time.perf_counter()
    summary = run_pipeline(spec)
    elapsed = time.perf_counter() - t0
    print(json.dumps({"cpus": cpus, "seconds": elapsed, "written": summary.inputs_written,
                      "rejected": summary.rejected_total}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=240)
    ap.add_argument("--side", type=int, default=1024)
    ap.add_argument("--backends", default="centerface,opencv",
                    help="detector backends; the first is also run with 1 CPU")
    ap.add_argument("--child", nargs=4, metavar=("SRC", "OUT", "CPUS", "BACKEND"))
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]), args.child[3])
        return
    backends = args.backends.split(",")
    runs = [(backends[0], 1)] + [(b, 2) for b in backends]
    with tempfile.TemporaryDirectory(prefix="relshard-e2e-") as tmp:
        src = Path(tmp) / "src"
        make_images(src, args.images, args.side)
        results = {}
        for backend, cpus in runs:
            proc = subprocess.run(
                [sys.executable, __file__, "--child", str(src), f"{tmp}/out-{backend}{cpus}",
                 str(cpus), backend],
                capture_output=True, text=True, check=True, cwd=REPO,
            )
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1]
            res = json.loads(line)
            assert res["written"] + res["rejected"] == args.images, res
            results[backend, cpus] = args.images / res["seconds"]
            print(f"{backend:>10} num_cpus={cpus}: {results[backend, cpus]:6.2f} images/s "
                  f"({res['seconds']:.1f} s for {args.images} images, {args.side}px)")
        first = backends[0]
        print(f"{first} speed-up 2 vs 1 CPU: {results[first, 2] / results[first, 1]:.2f}x "
              f"(target >= 1.6x)")
        for b in backends[:-1]:
            print(f"{b} vs {backends[-1]} at 2 CPUs: "
                  f"{results[b, 2] / results[backends[-1], 2]:.2f}x (target >= 5x)")


if __name__ == "__main__":
    main()
