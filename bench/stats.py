"""``relshard stats`` on a 1,000,000-row index against a plain pandas baseline.

Generates an output folder with a realistic index (all columns of
:data:`relshard.shards.index.INDEX_SCHEMA`: keys, URIs, member lists, counts,
caption lengths, provenance; ~1,000 samples per shard, written as parquet files
of ``--rows-per-file`` rows, so a bigger index has more files, as a bigger run has
more units), a rejects ledger and a manifest.
Then, in fresh child processes of this script (so that each peak RSS is its own),
it runs:

- ``relshard``: :func:`relshard.report.stats.compute_stats` (dask, out of core;
  ``records=0``: the generated shards are not real tars);
- ``pandas``: ``pd.read_parquet`` of the same columns, then the same figures
  (value counts per column, per-shard count and bytes, rejects by stage/reason).

Both runs are checked to give the same figures. It reports wall time and peak
RSS of each and their ratios, at each ``--rows`` size, so that the memory bound
can be read off: relshard's peak must not grow with the number of rows.

    python bench/stats.py [--rows 250000 1000000] [--rows-per-file 50000] [--dir /tmp] [--repeat 1]

Memory bound stated and checked: relshard's peak RSS stays under
``--bound-mb`` (default 400 MB, of which the imports of dask, pandas and pyarrow
are ~200 MB; the rest is at most 4 partitions in flight plus the counts) at
every size, and grows by less than 15% from the smallest to the largest index.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from relshard.shards.index import INDEX_SCHEMA, REJECTS_SCHEMA

PER_SHARD = 1000
BACKENDS = np.array(["heuristic", "openai", "transformers"])
MODELS = np.array([None, "qwen2-vl-7b", "smolvlm-256m"], dtype=object)
PROMPTS = np.array([None, "v1", "v2"], dtype=object)
MODALITIES = np.array(["image", "video", "events"])
REASONS = np.array(["empty_file", "truncated", "unsupported_format", "parse_error", "timeout"])
STAGES = np.array(["decode", "decode", "decode", "annotate", "annotate"])


def _file_table(rng: np.random.Generator, start: int, n: int) -> pa.Table:
    idx = np.arange(start, start + n)
    keys = np.char.add("clip-", np.char.mod("%012x", idx * 2654435761 % (1 << 48)))
    shard_no = idx // PER_SHARD
    shards = np.char.add(np.char.add("shards/w0-", np.char.mod("%06d", shard_no)), ".tar")
    size = rng.lognormal(11.5, 0.8, n).astype(np.int64) // 512 * 512 + 1536
    offset = np.zeros(n, dtype=np.int64)
    boundaries = np.r_[0, np.flatnonzero(np.diff(shard_no)) + 1]
    cum = np.cumsum(size) - size
    offset = cum - np.repeat(cum[boundaries], np.diff(np.r_[boundaries, n]))
    mod = rng.choice(3, n, p=[0.7, 0.25, 0.05])
    nframes = np.where(mod == 1, 8, np.where(mod == 0, 1, 0)).astype(np.int32)
    members = [["json", "txt", "rel.txt"] + (["jpg"] if f == 1 else
               [f"f{i:03d}.jpg" for i in range(f)]) for f in nframes]
    backend = rng.choice(3, n, p=[0.5, 0.4, 0.1])
    cols = {
        "key": keys, "input_key": keys, "uri": np.char.add("s3://bucket/raw/", keys),
        "shard": shards, "offset": offset, "size": size, "members": members,
        "modality": MODALITIES[mod], "n_frames": nframes,
        "n_subjects": rng.poisson(2.0, n).astype(np.int32),
        "n_attributes": rng.poisson(4.0, n).astype(np.int32),
        "n_relations": rng.poisson(5.0, n).astype(np.int32),
        "caption_len": rng.normal(180, 50, n).clip(0).astype(np.int32),
        "rel_caption_len": rng.normal(90, 30, n).clip(0).astype(np.int32),
        "backend": BACKENDS[backend], "model": MODELS[backend], "prompt_version": PROMPTS[backend],
        "sha256": np.full(n, "ab" * 32), "schema_version": np.ones(n, np.int32),
    }
    return pa.table({k: pa.array(list(v) if k == "members" else v, INDEX_SCHEMA.field(k).type)
                     for k, v in cols.items()}, schema=INDEX_SCHEMA)


def generate(root: Path, rows: int, per: int) -> None:
    """An output folder with ``rows`` index rows in parquet files of ``per`` rows."""
    rng = np.random.default_rng(0)
    for sub in ("index", "rejects", "shards"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, start in enumerate(range(0, rows, per)):
        pq.write_table(_file_table(rng, start, min(per, rows - start)),
                       root / "index" / f"w{i}-0000.parquet", compression="zstd")
    nrej = rows // 50
    pick = rng.integers(0, len(REASONS), nrej)
    rej = pa.table({"input_key": [f"bad-{i}" for i in range(nrej)],
                    "uri": [f"s3://bucket/raw/bad-{i}" for i in range(nrej)],
                    "stage": STAGES[pick], "reason": REASONS[pick], "detail": ["x"] * nrej,
                    "raw_output": [None] * nrej, "attempts": np.ones(nrej, np.int32)},
                   schema=REJECTS_SCHEMA)
    pq.write_table(rej, root / "rejects" / "w0-0000.parquet")
    nshards = -(-rows // PER_SHARD)
    manifest = {"schema_version": 1, "name": "bench", "spec_hash": "bench",
                "totals": {"samples": rows, "inputs_written": rows},
                "shardlist": [{"url": f"shards/w0-{i:06d}.tar", "nsamples": PER_SHARD,
                               "filesize": PER_SHARD * 150_000} for i in range(nshards)]}
    (root / "manifest.json").write_text(json.dumps(manifest))


def figures_relshard(root: str) -> dict:
    from relshard.report.stats import compute_stats

    s = compute_stats(root, records=0)
    return {"samples": s.samples, "shards": s.shards, "modality": s.modality,
            "backend": s.backend, "relations": s.relations.counts,
            "caption_len_p50": s.caption_len.p50, "rejects": s.rejects.by_reason,
            "max_shard_bytes": s.shard_balance.bytes_max}


def figures_pandas(root: str) -> dict:
    """The same figures the plain way: load the columns into one DataFrame."""
    import pandas as pd

    from relshard.report.tables import STATS_INDEX_COLUMNS

    df = pd.read_parquet(Path(root) / "index", columns=STATS_INDEX_COLUMNS)
    rej = pd.read_parquet(Path(root) / "rejects", columns=["stage", "reason"])
    counts = {c: df[c].value_counts(dropna=False) for c in
              ("modality", "backend", "model", "prompt_version", "n_subjects", "n_attributes",
               "n_relations", "n_frames", "caption_len", "rel_caption_len", "schema_version")}
    per_shard = df.groupby("shard")["size"].agg(["count", "sum"])
    by_reason = rej.groupby(["stage", "reason"]).size()
    cap = counts["caption_len"].sort_index()
    p50 = int(cap.index[np.searchsorted(cap.cumsum().to_numpy(), np.ceil(0.5 * cap.sum()))])
    return {"samples": len(df), "shards": len(per_shard),
            "modality": {str(k): int(v) for k, v in counts["modality"].items()},
            "backend": {str(k): int(v) for k, v in counts["backend"].items()},
            "relations": {int(k): int(v) for k, v in counts["n_relations"].items()},
            "caption_len_p50": p50,
            "rejects": {f"{s}: {r}": int(n) for (s, r), n in by_reason.items()},
            "max_shard_bytes": int(per_shard["sum"].max())}


def child(which: str, root: str) -> None:
    if which == "relshard":  # imports are not what is measured
        import dask.dataframe  # noqa: F401

        import relshard.report.stats  # noqa: F401
    else:
        import pandas  # noqa: F401
    fn = figures_relshard if which == "relshard" else figures_pandas
    start = time.perf_counter()
    figures = fn(root)
    wall = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall": wall, "peak_mb": peak_mb, "figures": figures}, default=str))


def run_child(which: str, root: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", which, str(root)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _norm(figs: dict) -> dict:
    out = json.loads(json.dumps(figs, default=str))
    for k in ("modality", "backend", "relations", "rejects"):
        out[k] = {str(a): b for a, b in sorted(out[k].items())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[250_000, 1_000_000])
    ap.add_argument("--rows-per-file", type=int, default=50_000)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--bound-mb", type=float, default=400.0)
    ap.add_argument("--child", nargs=2, metavar=("WHICH", "ROOT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    peaks = []
    for rows in args.rows:
        root = Path(tempfile.mkdtemp(prefix="relshard-bench-stats-", dir=args.dir))
        try:
            t0 = time.perf_counter()
            generate(root, rows, args.rows_per_file)
            nfiles = len(list((root / "index").glob("*.parquet")))
            print(f"\n{rows:,} index rows in {nfiles} files, "
                  f"{sum(p.stat().st_size for p in root.rglob('*.parquet')) / 2**20:.1f} MiB "
                  f"parquet (generated in {time.perf_counter() - t0:.1f} s)")
            best: dict[str, dict] = {}
            for _ in range(args.repeat):
                for which in ("pandas", "relshard"):
                    res = run_child(which, root)
                    if which not in best or res["wall"] < best[which]["wall"]:
                        best[which] = res
            same = _norm(best["pandas"]["figures"]) == _norm(best["relshard"]["figures"])
            ours, base = best["relshard"], best["pandas"]
            for name, res in (("pandas", base), ("relshard", ours)):
                print(f"  {name:9s} wall {res['wall']:6.2f} s   peak RSS {res['peak_mb']:7.0f} MB")
            print(f"  relshard/pandas: time x{ours['wall'] / base['wall']:.2f}, "
                  f"peak memory x{ours['peak_mb'] / base['peak_mb']:.2f}; same figures: {same}")
            peaks.append(ours["peak_mb"])
        finally:
            shutil.rmtree(root, ignore_errors=True)
    growth = peaks[-1] / peaks[0] - 1 if len(peaks) > 1 else 0.0
    ok = max(peaks) <= args.bound_mb and growth < 0.15
    print(f"\nmemory bound: relshard peak RSS <= {args.bound_mb:.0f} MB at every size and "
          f"< 15% growth from {args.rows[0]:,} to {args.rows[-1]:,} rows: peaks "
          f"{', '.join(f'{p:.0f}' for p in peaks)} MB, growth {growth:+.1%} -> "
          f"{'OK' if ok else 'EXCEEDED'}")


if __name__ == "__main__":
    main()
