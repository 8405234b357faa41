"""Bad rows of event logs, written straight into the rejects ledger by the driver.

The pre-pass finds bad rows (no time, a time that does not parse, no type, a broken
line) and unreadable logs before any worker runs; nothing about them needs a worker.
:class:`RowRejectLedger` writes them as committed reject-only units
(``rejects/RUN-rowsNNNNN-0000.parquet`` and its index footer, the commit marker) of at
most ``BATCH`` rows each, so the driver holds one batch however many rows are bad,
and they never enter the Ray listing. Keys already in the output (a resumed run)
are skipped and counted as done. A crash before a batch is committed leaves only
temporary files, which the next run removes; the rows are found again by its
pre-pass.
"""

from __future__ import annotations

from collections import Counter

from relshard.events.rowcheck import RowReject
from relshard.record import Reject
from relshard.shards.writer import commit_rejects

BATCH = 50_000
STAGE = "decode"


class RowRejectLedger:
    """Collects the run's row rejects and commits them in batches (see the module doc)."""

    def __init__(self, root: str, run_id: str, done: set[str], mtime: int = 0) -> None:
        self.root, self.run_id, self.done, self.mtime = root, run_id, done, mtime
        self.by_reason: Counter[str] = Counter()
        self.skipped = 0  # already in the output
        self.units = 0  # units committed
        self._pending: list[Reject] = []
        self._batches = 0

    @property
    def written(self) -> int:
        return sum(self.by_reason.values())

    def add(self, input_key: str, uri: str, reason: str, detail: str) -> None:
        if input_key in self.done:
            self.skipped += 1
            return
        self._pending.append(Reject(input_key=input_key, uri=uri, stage=STAGE, reason=reason,
                                    detail=detail[:4000]))
        if len(self._pending) >= BATCH:
            self.flush()

    def add_row(self, log_key: str, log_uri: str, row: RowReject) -> None:
        self.add(f"{log_key}-r{row.row:010d}", f"{log_uri}#row={row.row}", row.reason, row.detail)

    def flush(self) -> None:
        """Commit what is pending as one unit."""
        if not self._pending:
            return
        summary = commit_rejects(self.root, f"{self.run_id}-rows{self._batches:05d}",
                                 self._pending, "events", self.mtime)
        self.by_reason.update(summary.rejects_by_reason)
        self.units += len(summary.units)
        self._batches += 1
        self._pending = []

    def discard(self) -> None:
        """Drop what is pending (the run stopped on an error before it was committed)."""
        self._pending = []
