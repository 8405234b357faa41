"""Event logs to shards: relshard's events pipeline vs a pandas read + groupby + sort.

Generates (once, into a temp folder) a CSV of ``--rows`` events from a 4-type Hawkes
process over ``--sequences`` sequences, rows shuffled, times as epoch seconds. Then:

- baseline: ``pandas.read_csv`` + ``sort_values([seq, time])`` + ``groupby(seq)`` and one
  numpy array per sequence (what a hand-written script does before cutting windows,
  with no windows, no fit and no shards), in a child process;
- relshard: ``run_pipeline`` on a local Ray (``--cpus``) with windows of 256 events,
  stride 128, the whole-log fit and per-window Hawkes fits, writing shards.

Both report events/s of input rows and peak memory: the child's ``ru_maxrss`` for
pandas; for relshard the peak of the summed RSS of this process and every process
it started (Ray's raylet, GCS and workers; PSS, so pages of Ray's shared object
store count once), sampled every 0.25 s; the largest private memory of one of those
processes; and the peak RSS of the driver alone. ``--small`` repeats both at a
smaller size, to show which memory grows with the file. ``--single`` reads the
same log as one sequence (no sequence column: the case a worker cannot sort in
memory, cut into parts of ``events.part_rows``); the baseline then sorts by time.

    python bench/events.py                       # 10M rows (~3 minutes on 2 cores)
    python bench/events.py --single              # the same log as one sequence
    python bench/events.py --rows 1000000 --small 200000
    python bench/events.py --rows 2000000 --bad-every 3   # 667k bad rows: driver memory
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from relshard.events.simulate import simulate_hawkes

MU = np.array([0.02, 0.02, 0.01, 0.01])
ALPHA = np.array([[0.0, 0.5, 0.0, 0.0], [0.0, 0.2, 0.1, 0.0], [0.0, 0.0, 0.0, 0.3],
                  [0.0, 0.0, 0.0, 0.0]])
BETA = 1.0 / 30.0


def make_log(path: Path, rows: int, sequences: int, seed: int = 0, bad_every: int = 0) -> int:
    """Write the CSV in chunks of sequences; return the rows written."""
    rng = np.random.default_rng(seed)
    rate = np.linalg.solve(np.eye(len(MU)) - ALPHA.T, MU).sum()  # stationary events/s
    horizon = rows / sequences / rate
    written = 0
    names = np.array(["quake_a", "quake_b", "quake_c", "quake_d"])
    with pacsv.CSVWriter(str(path), pa.schema([
        ("region", pa.string()), ("time", pa.string() if bad_every else pa.float64()),
        ("kind", pa.string()),
        ("depth", pa.float64()), ("mag", pa.float64())])) as writer:
        chunk: list[pa.Table] = []
        for s in range(sequences):
            t, u = simulate_hawkes(MU, ALPHA, BETA, horizon, rng)
            chunk.append(pa.table({
                "region": np.full(len(t), f"r{s:05d}"), "time": 1.7e9 + t,
                "kind": names[u], "depth": rng.uniform(0, 30, len(t)).round(2),
                "mag": (3 + u + rng.uniform(0, 1, len(t))).round(2)}))
            written += len(t)
            if sum(c.num_rows for c in chunk) > 2_000_000 or s == sequences - 1:
                table = pa.concat_tables(chunk)
                chunk = []
                table = table.take(rng.permutation(table.num_rows))
                if bad_every:  # every bad_every-th row's time is not a time
                    times = np.array(table.column("time").to_pylist(), dtype=object).astype(str)
                    times[::bad_every] = "not a time"
                    table = table.set_column(1, "time", pa.array(times.tolist(), pa.string()))
                writer.write_table(table)
    return written


BASELINE = """
import resource, sys, time
import numpy as np, pandas as pd
t0 = time.perf_counter()
df = pd.read_csv(sys.argv[1])
if not pd.api.types.is_numeric_dtype(df["time"]):  # --bad-every: drop bad times
    df["time"] = pd.to_numeric(df["time"], errors="coerce")
    df = df.dropna(subset=["time"])
if sys.argv[2] == "single":
    df = df.sort_values("time", kind="stable")
    seqs = {"": (df["time"].to_numpy(np.float64), df["kind"].to_numpy())}
else:
    df = df.sort_values(["region", "time"], kind="stable")
    seqs = {k: (g["time"].to_numpy(np.float64), g["kind"].to_numpy())
            for k, g in df.groupby("region", sort=False)}
dt = time.perf_counter() - t0
print(len(df), len(seqs), dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def run_baseline(path: Path, single: bool) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", BASELINE, str(path),
                          "single" if single else "sequences"], check=True,
                         capture_output=True, text=True).stdout.split()
    rows, _, secs, rss_kb = int(out[0]), int(out[1]), float(out[2]), int(out[3])
    return rows / secs, rss_kb / 1024


def _memory(pid: int) -> tuple[int, int]:
    """(PSS, private bytes) of a process from /proc/PID/smaps_rollup: PSS shares pages
    mapped by several processes (Ray's shared object store) among them, so a sum over
    processes counts each page once; private bytes are the process's own."""
    pss = private = 0
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key == "Pss":
                pss = int(rest.split()[0]) * 1024
            elif key in ("Private_Clean", "Private_Dirty"):
                private += int(rest.split()[0]) * 1024
    return pss, private


def _tree_memory(root: int) -> tuple[int, int, str]:
    """Summed PSS of ``root`` and its descendants, and the largest private memory of one
    descendant, with its command line."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parent[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = {root}, [root]
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier and p not in tree]
        tree.update(kids)
        frontier = kids
    total = largest = 0
    name = ""
    for pid in tree:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pss, private = _memory(pid)
            total += pss
            if pid != root and private > largest:
                largest = private
                with open(f"/proc/{pid}/cmdline", "rb") as cl:
                    name = cl.read().replace(b"\0", b" ").decode(errors="replace").strip()[:40]
    return total, largest, name


class TreeMemory:
    """Peak summed PSS (MB) of this process and all its descendants, and the peak private
    memory of one descendant, sampled in a thread."""

    def __init__(self, every: float = 0.25) -> None:
        self.every, self.peak, self._stop = every, 0.0, threading.Event()
        self.peak_child = 0.0  # the largest single process other than this one (MB)
        self.peak_child_name = ""
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            total, largest, name = _tree_memory(me)
            self.peak = max(self.peak, total / 2**20)
            if largest / 2**20 > self.peak_child:
                self.peak_child, self.peak_child_name = largest / 2**20, name
            self._stop.wait(self.every)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_relshard(path: Path, out: Path, cpus: int,
                 single: bool) -> tuple[float, float, tuple[float, str], int, int]:
    from relshard.pipelines.runner import run_pipeline
    from relshard.spec import parse_spec

    spec = parse_spec({
        "name": "bench-events",
        "sources": [{"path": str(path), "modality": "events",
                     "events": {"time": "time", "type": "kind",
                                "sequence": None if single else "region",
                                "marks": ["depth", "mag"], "time_format": "epoch_s"}}],
        "decode": {"window": {"events": 256, "stride": 128}},
        "output": {"path": str(out), "max_reject_fraction": 0.9},
        "runtime": {"progress": False, "num_cpus": cpus},
    })
    with TreeMemory() as mem:
        t0 = time.perf_counter()
        summary = run_pipeline(spec)
        secs = time.perf_counter() - t0
    rows = sum(m["rows"] for m in summary.manifest["events"].values())
    return (rows / secs, mem.peak, (mem.peak_child, mem.peak_child_name),
            summary.samples_written, summary.rejected_total)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--small", type=int, default=0, help="also run at this size")
    ap.add_argument("--sequences", type=int, default=1000)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--single", action="store_true", help="the log as one sequence")
    ap.add_argument("--bad-every", type=int, default=0,
                    help="make every Nth row's time unparsable (rejects at scale)")
    args = ap.parse_args()
    sizes = [s for s in (args.small, args.rows) if s]
    with tempfile.TemporaryDirectory(prefix="relshard-bench-events-") as tmp:
        for size in sizes:
            log = Path(tmp) / f"log-{size}.csv"
            t0 = time.perf_counter()
            # in a child, so the generator's memory does not count against the pipeline
            spawn = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(1, mp_context=spawn) as pool:
                n = pool.submit(make_log, log, size, max(1, min(args.sequences, size // 1000)),
                                0, args.bad_every).result()
            mb = log.stat().st_size / 2**20
            print(f"\n{n:,} rows, {mb:.0f} MB CSV (generated in {time.perf_counter() - t0:.0f} s)")
            base_rate, base_mem = run_baseline(log, args.single)
            rate, mem, child, samples, rejected = run_relshard(
                log, Path(tmp) / f"out-{size}", args.cpus, args.single)
            print(f"  pandas read+sort+groupby : {base_rate:12,.0f} events/s, "
                  f"peak {base_mem:7.0f} MB")
            print(f"  relshard run (shards)    : {rate:12,.0f} events/s, peak {mem:7.0f} MB "
                  f"(PSS of the tree), {samples:,} windows, {rejected:,} rows rejected")
            print(f"  largest private memory of one Ray process: {child[0]:.0f} MB ({child[1]})")
            print(f"  ratio relshard/pandas    : {rate / base_rate:.2f}x speed, "
                  f"{mem / base_mem:.2f}x memory")
    peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n(relshard driver process peak RSS, pre-pass included: {peak_self:.0f} MB)")


if __name__ == "__main__":
    main()
