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

    @abstractmethod
    def process_batch(self, items: list[WorkItem]) -> list[WorkItem]:
        """Process items in place; return a list of the same length and order.

        Items that arrive rejected pass through untouched. A per-input problem sets
        ``item.fail(stage, reason, detail)``; only bugs and infrastructure raise.
        """
