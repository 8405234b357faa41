"""1 node vs 2 nodes: the same submitted job on a real loopback Ray cluster.

    python bench/cluster.py [--images 96]

Starts a head with 1 CPU (plus 0 CPU for the driver), submits a `relshard run`
job over N photos through the Jobs API and times it to SUCCEEDED; then joins a
second 1-CPU node and submits the same job to a fresh output. Prints images/s
for both and the ratio. On this 2-core machine the two "nodes" share the
machine, so the ratio is an upper bound on what the second node adds here;
docs/scale.md uses it with the per-input costs to size real clusters.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.e2e import make_images  # noqa: E402
from tests.helpers.loopback_cluster import LoopbackCluster  # noqa: E402


def timed_job(cluster: LoopbackCluster, src: Path, out: Path) -> float:
    from relshard.cluster import jobs
    from relshard.spec import parse_spec

    spec = parse_spec({"name": "bench-cluster", "sources": [{"path": str(src)}],
                       "output": {"path": str(out)}, "runtime": {"progress": False}})
    t0 = time.perf_counter()
    sid = jobs.submit(spec, cluster.dashboard)
    info = jobs.wait(sid, cluster.dashboard, timeout_s=1800, poll_s=0.5)
    if info.status != "SUCCEEDED":
        raise SystemExit(jobs.logs(sid, cluster.dashboard)[-3000:])
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=96)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="relshard-bench-cluster-") as tmp:
        src = Path(tmp) / "src"
        make_images(src, args.images, 1024)
        cluster = LoopbackCluster(Path(tmp) / "ray").start()
        try:
            one = timed_job(cluster, src, Path(tmp) / "out1")
            cluster.add_node(cpus=1)
            two = timed_job(cluster, src, Path(tmp) / "out2")
        finally:
            cluster.stop()
    print(f"1 node : {args.images / one:5.2f} images/s ({one:.1f} s, job submit to SUCCEEDED)")
    print(f"2 nodes: {args.images / two:5.2f} images/s ({two:.1f} s)")
    print(f"ratio 2 vs 1 node: {one / two:.2f}x")


if __name__ == "__main__":
    main()
