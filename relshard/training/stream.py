"""``ShardStream``: a torch ``IterableDataset`` of batches, exactly once per epoch.

Give it a manifest and a batch size; hand it to ``torch.utils.data.DataLoader``
with ``batch_size=None`` (the stream batches itself), or to
:class:`relshard.ShardLoader` for exact mid-epoch resume. The epoch plan
(:mod:`relshard.training.plan`) splits the manifest's samples, not its shard
files, over ranks and DataLoader workers, so every sample is read exactly once
per epoch however uneven the shards are, every rank yields the same number of
batches, and the order depends only on ``seed``, ``epoch`` and the manifest.

Rank and world size come from the arguments, else from ``torch.distributed``
when it is initialized, else from the ``RANK`` / ``WORLD_SIZE`` environment
variables (torchrun), else 0 and 1: create the stream after
``init_process_group``.

Each batch is, by default, a dict of lists: one list per member suffix
(``json``, ``txt``, ``rel.txt``, ``jpg``...; ``None`` where a sample lacks the
member), ``__key__``, ``__index__`` (global sample ids), ``__pad__`` (True for
slots that repeat a sample under ``remainder="pad"``) and ``__skipped__`` (how
many samples of the batch were skipped as corrupt or truncated: a skipped
sample shortens its batch, possibly to an empty one, but never removes a batch,
so ranks stay in step).

The stream trusts neither the manifest nor the shards (see
:mod:`relshard.training.catalog` and :mod:`relshard.shards.tarread`): shard
URLs outside the manifest's folder are refused unless ``allow_external=True``;
a member over ``max_member_bytes`` or an image over ``max_image_pixels`` is a
counted skip (``member_too_large``, ``image_too_large``), like any sample whose
bytes do not parse.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from relshard.deps import installed
from relshard.errors import RelshardError
from relshard.shards.decoding import MAX_IMAGE_PIXELS, ImageMode, decode_sample
from relshard.shards.tarread import MAX_MEMBER_BYTES, CorruptSample, read_members
from relshard.training.catalog import Catalog, ShardReader
from relshard.training.plan import PlanConfig, Remainder, locate, rank_batches, worker_batch_ids

log = logging.getLogger(__name__)
STATE_VERSION = 1
Batch = Any

if TYPE_CHECKING or installed("torch"):
    # a torch IterableDataset when torch is installed (DataLoader accepts it); the core
    # install streams without torch: no DataLoader workers, no torch.distributed
    import torch
    from torch.utils.data import IterableDataset, get_worker_info
else:
    torch = None

    class IterableDataset:  # stands in for torch's when torch is absent
        pass

    def get_worker_info() -> None:
        return None


class StreamStateError(RelshardError):
    """A saved stream state does not fit this stream."""


def resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Explicit values, else torch.distributed, else RANK/WORLD_SIZE, else (0, 1)."""
    if rank is not None and world_size is not None:
        pass
    elif (torch is not None and torch.distributed.is_available()
          and torch.distributed.is_initialized()):
        rank = torch.distributed.get_rank() if rank is None else rank
        world_size = torch.distributed.get_world_size() if world_size is None else world_size
    else:
        rank = int(os.environ.get("RANK", 0)) if rank is None else rank
        world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise RelshardError(f"rank {rank} must be in [0, world_size={world_size}).")
    return rank, world_size


def collate_dicts(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Samples to a dict of lists (``None`` where a sample lacks a member)."""
    keys: list[str] = ["__key__", "__index__", "__pad__"]
    for sample in samples:
        keys.extend(k for k in sample if k not in keys)
    return {k: [s.get(k) for s in samples] for k in keys}


class ShardStream(IterableDataset):  # type: ignore[type-arg]
    """Batches of decoded samples from relshard (or any wids-manifest) shards.

    Args:
        manifest: ``manifest.json`` path or URL (or its folder); any fsspec URL.
        batch_size: samples per batch.
        shuffle, seed, shuffle_window: the epoch order (see :mod:`relshard.training.plan`).
        remainder: ``"drop"`` or ``"pad"``: how to even out the last batches across ranks.
        rank, world_size: override the distributed setup.
        image: ``"rgb"`` decodes images to arrays, ``"bytes"`` keeps them encoded.
        members: only these suffixes are decoded (e.g. ``["json", "jpg"]``); all by default.
        collate_fn: turns a list of sample dicts into a batch (default: dict of lists).
        storage_options: passed to fsspec (credentials come from the environment).
        allow_external: read shards the manifest lists outside its own folder or URL
            prefix (refused by default: a manifest is data, not a list of files to trust).
        max_member_bytes: a member the sample needs that is bigger is never read; the
            sample is skipped as ``member_too_large`` (default 256 MiB).
        max_image_pixels: an image whose header claims more pixels (width x height) is
            not decoded; the sample is skipped as ``image_too_large`` (default Pillow's).
    """

    def __init__(
        self,
        manifest: str | os.PathLike[str],
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        shuffle_window: int | None = None,
        remainder: Remainder = "drop",
        rank: int | None = None,
        world_size: int | None = None,
        image: ImageMode = "rgb",
        members: list[str] | None = None,
        collate_fn: Callable[[list[dict[str, Any]]], Batch] | None = None,
        storage_options: dict[str, Any] | None = None,
        allow_external: bool = False,
        max_member_bytes: int = MAX_MEMBER_BYTES,
        max_image_pixels: int = MAX_IMAGE_PIXELS,
    ) -> None:
        super().__init__()
        if max_member_bytes < 1 or max_image_pixels < 1:
            raise RelshardError("Invalid ShardStream setting: max_member_bytes and "
                                "max_image_pixels must be at least 1.")
        self.catalog = Catalog.open(manifest, allow_external=allow_external,
                                    **(storage_options or {}))
        self.max_member_bytes = int(max_member_bytes)
        self.max_image_pixels = int(max_image_pixels)
        self.rank, self.world_size = resolve_rank(rank, world_size)
        try:
            self.plan = PlanConfig(
                counts=self.catalog.counts, batch_size=batch_size, world_size=self.world_size,
                shuffle=shuffle, seed=seed, shuffle_window=shuffle_window, remainder=remainder,
            )
        except ValueError as exc:
            raise RelshardError(f"Invalid ShardStream setting: {exc}.") from None
        if self.plan.batches_per_rank == 0:
            log.warning("%d samples make no full batch of %d on %d ranks: an epoch is empty",
                        self.plan.num_samples, batch_size, self.world_size)
        self.image: ImageMode = image
        self.members = frozenset(members) if members is not None else None
        self.collate_fn = collate_fn
        self.skipped: Counter[str] = Counter()
        self._epoch = 0
        self._start = 0  # the batch the next iteration begins with
        self._done = 0  # batches of this epoch known to be consumed

    # -- epochs and resume -------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's order; a resumed epoch keeps its position when set again."""
        if epoch != self._epoch:
            self._epoch, self._start, self._done = int(epoch), 0, 0

    def __len__(self) -> int:
        """Batches the next iteration of this rank yields."""
        return self.plan.batches_per_rank - self._start

    def state_dict(self) -> dict[str, Any]:
        """The position in the epoch, exact for iteration in this process or via ShardLoader."""
        p = self.plan
        return {
            "version": STATE_VERSION, "epoch": self._epoch, "batches_done": self._done,
            "samples_done": self._done * p.world_size * p.batch_size,
            "num_samples": p.num_samples, "batch_size": p.batch_size,
            "world_size": p.world_size, "shuffle": p.shuffle, "seed": p.seed,
            "shuffle_window": p.shuffle_window, "remainder": p.remainder,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next iteration yields exactly the batches not yet consumed."""
        p = self.plan
        for name in ("num_samples", "batch_size", "shuffle", "seed", "shuffle_window",
                     "remainder"):
            if state.get(name) != getattr(p, name):
                raise StreamStateError(
                    f"The saved stream state has {name}={state.get(name)!r} but this stream has "
                    f"{getattr(p, name)!r}; resume with the same manifest and settings."
                )
        done = int(state["batches_done"])
        if state.get("world_size") != p.world_size:
            step = p.world_size * p.batch_size
            if int(state["samples_done"]) % step:
                raise StreamStateError(
                    f"The saved position ({state['samples_done']} samples) is not a whole number "
                    f"of steps for world_size={p.world_size}; resume with the saved world size."
                )
            done = int(state["samples_done"]) // step
        self._epoch, self._start, self._done = int(state["epoch"]), done, done

    # -- iteration ---------------------------------------------------------------------

    def _worker(self) -> tuple[int, int]:
        info = get_worker_info()
        return (0, 1) if info is None else (info.id, info.num_workers)

    def iter_batches(self, start: int, worker: int, num_workers: int) -> Iterator[Batch]:
        """The batches of this rank that ``worker`` reads, from batch ``start`` on."""
        grid, pad = rank_batches(self.plan, self._epoch, self.rank)
        reader = ShardReader(self.catalog)
        try:
            for b in worker_batch_ids(len(grid), start, worker, num_workers):
                yield self._batch(reader, grid[b], pad[b])
        finally:
            reader.close()

    def __iter__(self) -> Iterator[Batch]:
        worker, num_workers = self._worker()
        start = self._start
        if get_worker_info() is not None:
            yield from self.iter_batches(start, worker, num_workers)
            return
        self._done = start
        for batch in self.iter_batches(start, 0, 1):
            self._done += 1
            yield batch
        self._start = 0

    def _batch(self, reader: ShardReader, ids: np.ndarray, pad: np.ndarray) -> Batch:
        shards, local = locate(self.catalog.counts, ids)
        samples: list[dict[str, Any]] = []
        skipped = 0
        for gid, shard, idx, is_pad in zip(ids.tolist(), shards.tolist(), local.tolist(),
                                           pad.tolist(), strict=True):
            sample = self._sample(reader, int(gid), int(shard), int(idx))
            if sample is None:
                skipped += 1
                continue
            sample["__index__"], sample["__pad__"] = int(gid), bool(is_pad)
            samples.append(sample)
        if self.collate_fn is not None:
            return self.collate_fn(samples)
        batch = collate_dicts(samples)
        batch["__skipped__"] = skipped
        return batch

    def _sample(self, reader: ShardReader, gid: int, shard: int, idx: int
                ) -> dict[str, Any] | None:
        url = self.catalog.urls[shard]
        try:
            spans = reader.spans(shard)
            if idx >= len(spans):
                raise CorruptSample(
                    f"the shard holds {len(spans)} readable samples, the manifest says "
                    f"{self.catalog.counts[shard]}", "truncated_shard")
            offset, size = (int(v) for v in spans[idx])
            total = reader.file_size(shard)
            if offset + size > total:
                raise CorruptSample(f"the sample's bytes {offset}..{offset + size} run past the "
                                    f"shard's end at {total}", "truncated_shard")
            if size <= self.max_member_bytes:  # one read, parsed in memory
                data = reader.read(shard, offset, size)
                if len(data) < size:
                    raise CorruptSample("the shard ends inside the sample", "truncated_shard")
                view = memoryview(data)

                def read_at(pos: int, n: int) -> bytes:
                    return bytes(view[pos:pos + n])
            else:  # a big sample: walk its headers, read only the members wanted
                def read_at(pos: int, n: int) -> bytes:
                    return reader.read(shard, offset + pos, n)
            members = read_members(read_at, size, self.max_member_bytes, self.members)
            return decode_sample(members, self.image, self.members, self.max_image_pixels)
        except CorruptSample as exc:
            reason, detail = exc.reason, exc.detail
        except FileNotFoundError:
            reason, detail = "missing_shard", "the shard file does not exist"
            reader.spans_missing(shard)
        except OSError as exc:
            reason, detail = "unreadable_shard", str(exc)
        self.skipped[reason] += 1
        log.warning("skipped sample %d (#%d of %s): %s: %s [%d %s so far in this process]",
                    gid, idx, url, reason, detail, self.skipped[reason], reason)
        return None
