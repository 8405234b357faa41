"""``ShardLoader``: a DataLoader over a :class:`ShardStream` that knows what was consumed.

DataLoader workers prefetch ahead of the training loop, so neither the stream in
the main process nor its copies in the workers know which batches the loop has
actually taken. ``ShardLoader`` counts the batches it hands out; since the
stream deals batches to workers round-robin and the DataLoader collects them in
that order, "batches handed out" is an exact position in the epoch's plan.
``state_dict()`` saves it and ``load_state_dict()`` makes the next iteration
yield exactly the batches not yet seen in that epoch, in the same order as the
uninterrupted run (workers skip the consumed batches without reading them).

Example::

    stream = ShardStream("out/demo/manifest.json", batch_size=32, shuffle=True, seed=0)
    loader = ShardLoader(stream, num_workers=4)
    loader.load_state_dict(checkpoint["loader"])       # when resuming
    for epoch in range(loader.epoch, 3):
        loader.set_epoch(epoch)
        for batch in loader:
            ...
            checkpoint = {"loader": loader.state_dict(), ...}
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from relshard.deps import require, require_extra
from relshard.training.stream import Batch, ShardStream


class ShardLoader:
    """Iterate a :class:`ShardStream` through DataLoader workers with exact resume.

    Args:
        stream: the stream; it does its own batching (the DataLoader gets ``batch_size=None``).
        num_workers: DataLoader worker processes (0 reads in this process).
        prefetch_factor: batches each worker reads ahead (with workers).
        pin_memory, multiprocessing_context, timeout: as for ``torch.utils.data.DataLoader``.

    Workers are not persistent: each epoch starts them with the stream's current
    position, which is what makes the resume exact. Workers need torch
    (``relshard[train]``); with ``num_workers=0`` the core install is enough.
    """

    def __init__(
        self,
        stream: ShardStream,
        num_workers: int = 0,
        *,
        prefetch_factor: int | None = None,
        pin_memory: bool = False,
        multiprocessing_context: Any = None,
        timeout: float = 0,
    ) -> None:
        if num_workers < 0:
            raise ValueError(f"num_workers must be 0 or more, got {num_workers}")
        if num_workers:
            require_extra("train")  # DataLoader workers are torch's
        self.stream = stream
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor if num_workers else None
        self.pin_memory = pin_memory
        self.multiprocessing_context = multiprocessing_context if num_workers else None
        self.timeout = timeout

    @property
    def epoch(self) -> int:
        return self.stream.epoch

    def set_epoch(self, epoch: int) -> None:
        """As :meth:`ShardStream.set_epoch`."""
        self.stream.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.stream)

    def state_dict(self) -> dict[str, Any]:
        """The stream's settings and the batches of this epoch handed out so far."""
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (see :meth:`ShardStream.load_state_dict`)."""
        self.stream.load_state_dict(state)

    def __iter__(self) -> Iterator[Batch]:
        stream = self.stream
        if self.num_workers == 0:
            yield from stream
            return
        # workers are torch's: the core install reads in this process only
        data = require("torch.utils.data", "train", "torch")
        start = stream._start
        loader = data.DataLoader(
            stream, batch_size=None, num_workers=self.num_workers,
            prefetch_factor=self.prefetch_factor, pin_memory=self.pin_memory,
            multiprocessing_context=self.multiprocessing_context, timeout=self.timeout,
            persistent_workers=False, in_order=True,
        )
        iterator = iter(loader)  # the workers start here, with the stream at `start`
        stream._done = start
        for batch in iterator:
            stream._done += 1
            yield batch
        stream._start = 0
