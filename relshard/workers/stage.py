"""The Stage: what every decoder, detector and annotator step is to the pipeline.

A stage never imports Ray. The Ray backend turns it into ``map_batches``: an
actor pool when ``stateful`` (a model to load once) or when it needs GPUs, plain
tasks otherwise. Tests run stages in-process by calling ``process_batch``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from relshard.shards.item import WorkItem
from relshard.spec import Resources


class Stage(ABC):
    name: str = "stage"
    batch_size: int = 1
    resources: Resources = Resources()
    stateful: bool = False  # True: run as an actor pool, setup() once per actor

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Load models or open pools; called once per worker before the first batch."""

    def teardown(self) -> None:  # noqa: B027 - optional hook
        """Release what setup() acquired."""

    def config_key(self) -> str:
        """Tells stages with different settings apart (a worker caches per key)."""
        return type(self).__qualname__

    def takes_payloads(self) -> bool:
        """True: the backend may hand :meth:`process_payloads` the inputs' WorkItem bytes
        and store what it returns as they are (no WorkItem objects in the worker)."""
        return False

    def process_payloads(self, payloads: list[bytes]) -> list[bytes]:
        """WorkItem bytes in, WorkItem bytes out (same length and order)."""
        items = self.process_batch([WorkItem.from_bytes(p) for p in payloads])
        return [it.to_bytes() for it in items]

    @abstractmethod
    def process_batch(self, items: list[WorkItem]) -> list[WorkItem]:
        """Process items in place; return a list of the same length and order.

        Items that arrive rejected pass through untouched. A per-input problem sets
        ``item.fail(stage, reason, detail)``; only bugs and infrastructure raise.
        """
