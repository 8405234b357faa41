"""The epoch plan: which samples each rank and DataLoader worker reads, in which order.

Pure numpy, no torch and no I/O. Samples are numbered globally from the
manifest's sample counts (shard 0's samples first, then shard 1's...), so the
split never depends on how many shard files there are or how uneven they are.

One epoch:

1. **Order.** Without shuffle, the manifest order. With shuffle, a permutation
   drawn from ``(seed, epoch)``: the shard order is shuffled, then the samples
   are shuffled within consecutive windows of ``shuffle_window`` samples
   (``None``: one window, a uniform shuffle of the whole epoch).
2. **Remainder.** Every rank gets the same number of full batches, so no rank
   waits forever in a collective. ``remainder="drop"`` keeps
   ``N // (world * batch)`` batches per rank and leaves the last
   ``N % (world * batch)`` samples of the epoch's order out (a different set
   each epoch when shuffling); ``"pad"`` keeps ``ceil(N / (world * batch))``
   batches and fills the missing slots by repeating the epoch's first samples
   (marked ``__pad__``).
3. **Ranks.** Global batch ``g`` is ``order[g*B:(g+1)*B]``; rank ``r`` reads global
   batches ``r, r + world, r + 2*world...``. Step ``b`` of every rank together
   covers ``order[b*world*B:(b+1)*world*B]``, so a resume point is a position in
   the epoch's order, independent of the world size.
4. **Workers.** A rank's batches from ``start`` on are dealt to its DataLoader
   workers round-robin (worker ``w`` reads batches ``start + w``,
   ``start + w + num_workers``...), which is the order in which
   ``torch.utils.data.DataLoader`` collects them, so the loader yields batches in plan order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Remainder = Literal["drop", "pad"]


@dataclass(frozen=True)
class PlanConfig:
    """What fixes an epoch's plan (besides the epoch number)."""

    counts: tuple[int, ...]  # samples per shard, from the manifest
    batch_size: int
    world_size: int = 1
    shuffle: bool = False
    seed: int = 0
    shuffle_window: int | None = None
    remainder: Remainder = "drop"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.world_size < 1:
            raise ValueError(f"world_size must be at least 1, got {self.world_size}")
        if self.shuffle_window is not None and self.shuffle_window < 1:
            raise ValueError(f"shuffle_window must be at least 1, got {self.shuffle_window}")
        if self.remainder not in ("drop", "pad"):
            raise ValueError(f"remainder must be 'drop' or 'pad', got {self.remainder!r}")

    @property
    def num_samples(self) -> int:
        return int(sum(self.counts))

    @property
    def batches_per_rank(self) -> int:
        """Batches every rank reads in one epoch (the same for all ranks)."""
        step = self.world_size * self.batch_size
        if self.remainder == "drop":
            return self.num_samples // step
        return -(-self.num_samples // step)


def epoch_order(cfg: PlanConfig, epoch: int) -> np.ndarray:
    """Global sample ids of one epoch, in reading order (length ``num_samples``)."""
    counts = np.asarray(cfg.counts, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(counts) else counts
    if not cfg.shuffle:
        return np.arange(cfg.num_samples, dtype=np.int64)
    rng = np.random.default_rng([int(cfg.seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF])
    shard_order = rng.permutation(len(counts))
    pieces = [np.arange(starts[s], starts[s] + counts[s], dtype=np.int64) for s in shard_order]
    order = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    window = cfg.shuffle_window or max(len(order), 1)
    for lo in range(0, len(order), window):
        order[lo:lo + window] = rng.permutation(order[lo:lo + window])
    return order


def rank_batches(cfg: PlanConfig, epoch: int, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``(batches, pad)`` of ``rank`` in ``epoch``: two ``[batches_per_rank, B]`` arrays.

    ``batches`` holds global sample ids; ``pad`` is True where a slot repeats a
    sample to fill the last batches (``remainder="pad"`` only).
    """
    if not 0 <= rank < cfg.world_size:
        raise ValueError(f"rank {rank} is outside world_size {cfg.world_size}")
    order = epoch_order(cfg, epoch)
    nb, world, bsz = cfg.batches_per_rank, cfg.world_size, cfg.batch_size
    used = nb * world * bsz
    pad = np.zeros(used, dtype=bool)
    if used <= len(order):
        slots = order[:used]
    else:
        slots = np.resize(order, used) if len(order) else np.zeros(used, dtype=np.int64)
        pad[len(order):] = True
    grid = slots.reshape(nb, world, bsz)[:, rank, :]
    return grid, pad.reshape(nb, world, bsz)[:, rank, :]


def worker_batch_ids(num_batches: int, start: int, worker: int, num_workers: int) -> range:
    """The batch numbers (within a rank's epoch) that ``worker`` reads, from ``start`` on."""
    if not 0 <= worker < num_workers:
        raise ValueError(f"worker {worker} is outside num_workers {num_workers}")
    return range(start + worker, num_batches, num_workers)


def locate(counts: tuple[int, ...] | list[int], ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Global sample ids to ``(shard index, index within the shard)``."""
    bounds = np.cumsum(np.asarray(counts, dtype=np.int64))
    shard = np.searchsorted(bounds, ids, side="right")
    first = np.concatenate([[0], bounds[:-1]])
    return shard, ids - first[shard]
