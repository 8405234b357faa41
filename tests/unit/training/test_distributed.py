"""Two processes over gloo on CPU, each with DataLoader workers: exactly once and exact resume."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

from relshard.training.plan import PlanConfig, rank_batches
from tests.unit.training.distworker import run_rank
from tests.unit.training.shardgen import make_output


def test_two_ranks_over_gloo_with_workers(tmp_path: Path) -> None:
    manifest = make_output(tmp_path / "out", [3, 17, 1, 9, 2])  # 32 samples
    ctx = mp.get_context("fork")  # as DataLoader workers do; no re-import of torch
    outs = [tmp_path / f"rank{r}.json" for r in range(2)]
    procs = [ctx.Process(target=run_rank, args=(r, 2, str(manifest), str(tmp_path / "rdv"),
                                                str(outs[r])))
             for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=150)
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    results = [json.loads(o.read_text()) for o in outs]
    cfg = PlanConfig((3, 17, 1, 9, 2), batch_size=3, world_size=2, shuffle=True, seed=4)
    for rank, r in enumerate(results):
        assert r["state"]["batches_done"] == 2 and r["state"]["samples_done"] == 12
        read = r["taken"] + r["rest"]
        assert len(read) == 5  # 32 // (2 * 3) batches on each rank, drop policy
        assert read == rank_batches(cfg, 1, rank)[0].tolist()  # the uninterrupted order
    seen = [i for r in results for b in r["taken"] + r["rest"] for i in b]
    assert len(seen) == len(set(seen)) == 30
