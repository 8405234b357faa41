"""How the Ray backend cuts the listing into blocks and tasks (no Ray started)."""

from __future__ import annotations

import pyarrow as pa

from relshard.pipelines.ray_backend import _batch_sizes, _split
from relshard.shards.item import WorkItem
from relshard.workers.stage import Stage


class _Batched(Stage):
    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size

    def process_batch(self, items: list[WorkItem]) -> list[WorkItem]:
        return items


def _listing(n: int) -> list[pa.Table]:
    return [pa.table({"input_key": [f"k{i}" for i in range(n)]})]


def test_the_first_stage_takes_one_block_a_task_when_its_batch_is_larger() -> None:
    # 2,000 inputs in 8 blocks of 250: a batch of 256 would make Ray Data bundle two
    # blocks a task (4 tasks); capped at the block, each task takes one (8 tasks)
    blocks = _split(_listing(2000), 8)
    assert [t.num_rows for t in blocks] == [250] * 8
    assert _batch_sizes([_Batched(256), _Batched(32)], blocks) == [250, 32]


def test_batches_smaller_than_a_block_and_empty_runs_keep_their_size() -> None:
    blocks = _split(_listing(100_000), 100)  # blocks of 1,000 rows
    assert _batch_sizes([_Batched(256)], blocks) == [256]
    assert _batch_sizes([_Batched(256)], []) == [256]
    assert _batch_sizes([], blocks) == []


def test_small_runs_write_in_quarters_so_writes_overlap_the_decoding() -> None:
    from relshard.pipelines.ray_backend import MIN_WRITE_ROWS, _rows_per_write

    assert _rows_per_write(1000, 10_000_000, writers=16) == 1000  # large runs: the cap
    assert _rows_per_write(1000, 2000, writers=1) == 500
    assert _rows_per_write(1000, 120, writers=1) == 30
    assert _rows_per_write(1000, 9, writers=1) == MIN_WRITE_ROWS  # one write task
    assert _rows_per_write(4, 120, writers=1) == 4  # a smaller setting wins
