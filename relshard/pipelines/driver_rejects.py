"""Inputs the driver rejects itself (listing errors), written straight into the ledger.

A symlink loop, a folder that cannot be read, a file that vanished between the
folder listing and its ``stat``: nothing about them needs a worker, so the driver
commits them as reject-only units (``rejects/RUN-listNNNNN-0000.parquet`` and its
index footer, the commit marker), at most ``BATCH`` rows each. Keys already done
(an earlier run's reject that is not being retried) are skipped and counted.
"""

from __future__ import annotations

from collections import Counter

from relshard.pipelines.sources import LIST_STAGE, ListingReject
from relshard.record import Reject
from relshard.shards.writer import commit_rejects

BATCH = 50_000


class ListingRejectLedger:
    """Collects the run's listing rejects and commits them in batches."""

    def __init__(self, root: str, run_id: str, done: set[str], mtime: int = 0) -> None:
        self.root, self.run_id, self.done, self.mtime = root, run_id, done, mtime
        self.by_reason: Counter[str] = Counter()
        self.skipped = 0
        self.units = 0
        self._pending: list[Reject] = []
        self._batches = 0

    @property
    def written(self) -> int:
        return sum(self.by_reason.values())

    def add(self, rej: ListingReject) -> None:
        if rej.input_key in self.done:
            self.skipped += 1
            return
        self._pending.append(Reject(input_key=rej.input_key, uri=rej.uri, stage=LIST_STAGE,
                                    reason=rej.reason, detail=rej.detail))
        if len(self._pending) >= BATCH:
            self.flush()

    def flush(self) -> None:
        """Commit what is pending as one unit."""
        if not self._pending:
            return
        summary = commit_rejects(self.root, f"{self.run_id}-list{self._batches:05d}",
                                 self._pending, "auto", self.mtime)
        self.by_reason.update(summary.rejects_by_reason)
        self.units += len(summary.units)
        self._batches += 1
        self._pending = []
