"""The Ray Data Datasink that commits shards (the run monitor it reports to:
:mod:`relshard.pipelines.run_monitor`).

Each write task owns one :class:`relshard.shards.writer.ShardWriter`; its units
are named from the run id and Ray's task index, so a retried task rewrites the
same names instead of adding duplicates. The manifest is written by the driver
after every task has committed (``on_write_complete``), like a two-phase commit.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from typing import Any

import ray
from ray.data import Datasink
from ray.data.block import Block, BlockAccessor

from relshard.errors import RelshardError
from relshard.pipelines.budget import check_reject_budget
from relshard.pipelines.gc_pause import gc_paused
from relshard.pipelines.run_monitor import report_failure
from relshard.shards.item import WorkItem
from relshard.shards.writer import ShardWriter
from relshard.spec import OutputSpec

REPORT_EVERY = 32
log = logging.getLogger(__name__)


@ray.remote(num_cpus=0)
def warm_writer() -> None:
    """Nothing: run once at the start of a run so Ray starts a writer worker process (and
    this module's imports happen in it) while the decode tasks work, not after them."""


class ShardDatasink(Datasink[dict[str, Any]]):
    def __init__(self, root: str, run_id: str, output: OutputSpec, monitor: Any,
                 rows_per_write: int) -> None:
        self.root = root
        self.run_id = run_id
        self.output = output
        self.monitor = monitor
        self._rows_per_write = rows_per_write
        self.result: list[dict[str, Any]] = []

    @property
    def min_rows_per_write(self) -> int:
        return self._rows_per_write

    def get_name(self) -> str:
        return "WriteShards"

    def _check(self, written: int, rejected: int) -> None:
        try:
            seen, total_rejected = ray.get(self.monitor.add.remote(written, rejected))
        except ray.exceptions.RayActorError:
            # Only the driver's own node can take the monitor down (it is pinned
            # there), and then the run is over anyway; the final check still holds.
            log.warning("the reject monitor is gone; the budget is checked at the end")
            return
        check_reject_budget(total_rejected, seen, self.output.max_reject_fraction,
                            min_seen=self.output.reject_check_after)

    def write(self, blocks: Iterable[Block], ctx: Any) -> dict[str, Any]:
        try:
            return self._write(blocks, ctx)
        except RelshardError as exc:
            report_failure(self.monitor, exc)
            raise

    def _write(self, blocks: Iterable[Block], ctx: Any) -> dict[str, Any]:
        writer = ShardWriter(
            self.root,
            f"{self.run_id}-{ctx.task_idx:05d}",
            max_samples=self.output.shard_max_samples,
            max_bytes=int(self.output.shard_max_bytes),
            mtime=self.output.mtime,
        )
        reported = (0, 0)
        since = 0
        for block in blocks:
            payloads = BlockAccessor.for_block(block).to_arrow().column("payload")
            for payload in payloads.to_pylist():
                with gc_paused():  # per input: see relshard.pipelines.gc_pause
                    writer.add(WorkItem.from_bytes(payload))
                since += 1
                if since >= REPORT_EVERY:
                    reported = self._report(writer.summary, reported)
                    since = 0
        summary = writer.close()
        self._report(summary, reported)
        return dataclasses.asdict(summary)

    def _report(self, summary: Any, reported: tuple[int, int]) -> tuple[int, int]:
        """Send the counts added since the last report; return the new totals."""
        now = (summary.inputs_written, summary.inputs_rejected)
        if now != reported:
            self._check(now[0] - reported[0], now[1] - reported[1])
        return now

    def on_write_complete(self, write_result: Any) -> None:
        self.result = list(write_result.write_returns)
