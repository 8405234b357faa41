"""The epoch plan: exactly once across ranks and workers, equal batches, deterministic order."""

from __future__ import annotations

import numpy as np
import pytest

from relshard.training.plan import (
    PlanConfig,
    epoch_order,
    locate,
    rank_batches,
    worker_batch_ids,
)

UNEVEN = (1, 37, 2, 0, 90, 3)  # 133 samples, one empty shard


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("workers", [1, 3, 8])
def test_drop_reads_every_kept_sample_once(world: int, workers: int) -> None:
    cfg = PlanConfig(UNEVEN, batch_size=5, world_size=world, shuffle=True, seed=3)
    seen: list[int] = []
    per_rank = []
    for rank in range(world):
        grid, pad = rank_batches(cfg, 1, rank)
        assert not pad.any()
        got = 0
        for w in range(workers):
            for b in worker_batch_ids(len(grid), 0, w, workers):
                seen.extend(grid[b].tolist())
                got += 1
        per_rank.append(got)
    assert len(set(per_rank)) == 1 and per_rank[0] == 133 // (world * 5)
    assert len(seen) == len(set(seen)) == per_rank[0] * world * 5
    dropped = set(range(133)) - set(seen)
    assert len(dropped) == 133 % (world * 5)


def test_pad_covers_every_sample_and_marks_repeats() -> None:
    cfg = PlanConfig(UNEVEN, batch_size=4, world_size=3, remainder="pad", shuffle=True)
    grids = [rank_batches(cfg, 0, r) for r in range(3)]
    assert {g.shape for g, _ in grids} == {(12, 4)}  # ceil(133 / 12) batches each
    ids = np.concatenate([g.ravel() for g, _ in grids])
    pads = np.concatenate([p.ravel() for _, p in grids])
    assert set(ids[~pads].tolist()) == set(range(133))
    assert len(ids[~pads]) == 133 and pads.sum() == 12 * 12 - 133


def test_shuffle_depends_on_seed_and_epoch_only() -> None:
    cfg = PlanConfig(UNEVEN, batch_size=2, shuffle=True, seed=7)
    a, b = epoch_order(cfg, 0), epoch_order(cfg, 0)
    assert (a == b).all() and sorted(a.tolist()) == list(range(133))
    assert not (a == epoch_order(cfg, 1)).all()
    other = PlanConfig(UNEVEN, batch_size=2, shuffle=True, seed=8)
    assert not (a == epoch_order(other, 0)).all()
    assert (epoch_order(PlanConfig(UNEVEN, 2), 5) == np.arange(133)).all()


def test_shuffle_window_keeps_samples_within_windows() -> None:
    cfg = PlanConfig((50, 50), batch_size=1, shuffle=True, seed=1, shuffle_window=50)
    order = epoch_order(cfg, 0)
    first, second = set(order[:50].tolist()), set(order[50:].tolist())
    assert first in ({*range(50)}, {*range(50, 100)}) and first | second == set(range(100))


def test_global_position_is_independent_of_world_size() -> None:
    cfg1 = PlanConfig(UNEVEN, batch_size=3, world_size=1, shuffle=True)
    cfg2 = PlanConfig(UNEVEN, batch_size=3, world_size=2, shuffle=True)
    g1, _ = rank_batches(cfg1, 2, 0)
    step = np.stack([rank_batches(cfg2, 2, r)[0][4] for r in range(2)])
    assert (step.ravel() == g1[8:10].ravel()).all()


def test_locate_and_bad_settings() -> None:
    shard, local = locate(UNEVEN, np.array([0, 1, 37, 38, 40, 132]))
    assert shard.tolist() == [0, 1, 1, 2, 4, 5] and local.tolist() == [0, 0, 36, 0, 0, 2]
    with pytest.raises(ValueError, match="batch_size"):
        PlanConfig(UNEVEN, batch_size=0)
    with pytest.raises(ValueError, match="remainder"):
        PlanConfig(UNEVEN, batch_size=1, remainder="wrap")  # type: ignore[arg-type]
