"""The rejects ledger read as history: which inputs are written, rejected, retryable.

The ledger is append-only. A run that retries a reject (``relshard run SPEC
--retry-rejects``) never rewrites the old reject row: when the input is written,
its key is in the index, and that write *supersedes* the reject; when it is
rejected again, the new row is the input's latest reject. So, for each input key:

- written: the key is in some committed index (whatever its rejects say);
- rejected: not written, and its latest reject row (in commit order) says why.

Commit order is the order of run ids, the prefix of every unit name up to its
first ``-`` (``YYYYmmddHHMMSSmmm`` + random, UTC: sortable, and two runs never
overlap on one output because each holds the output's lease,
:mod:`relshard.shards.lease`). Within one run an input is written or rejected
once, so a reject in the same run as a write, or in a later one, is a problem
that ``verify`` reports and ``verify --repair`` removes.

Rejects files written before the ``retryable`` column existed are read through
:func:`relshard.record.is_retryable_reason`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from relshard.record import is_retryable_reason
from relshard.shards.index import UnitInfo, read_column
from relshard.shards.layout import OutputLayout, index_relpath
from relshard.shards.parquet_read import parquet_file


def run_of(unit: str) -> str:
    """The run id of a unit name (its prefix up to the first ``-``)."""
    return unit.split("-", 1)[0]


@dataclass(frozen=True)
class RejectRow:
    """One row of a rejects file, with the unit that committed it."""

    input_key: str
    stage: str
    reason: str
    retryable: bool
    unit: str


def read_rejects(layout: OutputLayout, relpath: str, unit: str) -> list[RejectRow]:
    """The rows of one rejects file; ``retryable`` inferred from the reason where absent."""
    with parquet_file(layout.fs, layout.path(relpath)) as pf:
        names = set(pf.schema_arrow.names)
        cols = [c for c in ("input_key", "stage", "reason", "retryable") if c in names]
        table = pf.read(columns=cols)
    data = table.to_pydict()
    n = table.num_rows
    flags = data.get("retryable") or [None] * n
    stages = data.get("stage") or [""] * n
    return [
        RejectRow(key, str(stage or ""), str(reason or ""),
                  bool(flag) if flag is not None else is_retryable_reason(str(reason or "")),
                  unit)
        for key, stage, reason, flag in zip(data["input_key"], stages, data["reason"], flags,
                                            strict=True)
    ]


@dataclass
class RetrySelection:
    """Which rejects a ``--retry-rejects`` run re-queues: ``reasons`` None = every retryable."""

    reasons: frozenset[str] | None = None

    def wants(self, row: RejectRow) -> bool:
        return row.retryable if self.reasons is None else row.reason in self.reasons

    @classmethod
    def parse(cls, text: str | None) -> RetrySelection:
        """``""``/None/``retryable``: every retryable reason; else a comma-separated list."""
        names = [t.strip() for t in (text or "").split(",") if t.strip()]
        if not names or names == ["retryable"]:
            return cls(None)
        return cls(frozenset(names))

    def describe(self) -> str:
        return "retryable" if self.reasons is None else ",".join(sorted(self.reasons))


@dataclass
class Ledger:
    """What the committed units of an output say about each input (see the module doc)."""

    written: set[str] = field(default_factory=set)  # filled only by read_ledger(all_written)
    rejected: dict[str, RejectRow] = field(default_factory=dict)  # latest, not superseded
    superseded: int = 0  # reject rows of inputs written by a later run
    repeated: int = 0  # reject rows followed by a later reject of the same input
    after_write: list[tuple[str, str, str]] = field(default_factory=list)  # key, reject, write

    def by_reason(self) -> Counter[tuple[str, str]]:
        """Rejected inputs (each once, by its latest reject) per (stage, reason)."""
        return Counter((r.stage, r.reason) for r in self.rejected.values())

    @property
    def retryable(self) -> int:
        """Rejected inputs whose latest reject is retryable."""
        return sum(1 for r in self.rejected.values() if r.retryable)


def _ordered(units: dict[str, UnitInfo]) -> list[UnitInfo]:
    return [units[name] for name in sorted(units, key=lambda n: (run_of(n), n))]


def read_ledger(layout: OutputLayout, units: dict[str, UnitInfo], *,
                all_written: bool = False, later_writes_only: bool = False) -> Ledger:
    """Read the ledger of the committed ``units``.

    ``all_written``: also collect every written input key (what a resumed run skips);
    otherwise only the rejected keys are looked up in the index (memory follows the
    rejects, not the run). ``later_writes_only``: skip index files of runs before the
    first reject (they cannot supersede one; writes-then-rejects go unnoticed).
    """
    ledger = Ledger()
    ordered = _ordered(units)
    history: dict[str, list[RejectRow]] = {}
    for info in ordered:
        if info.rejects:
            for row in read_rejects(layout, info.rejects, info.name):
                history.setdefault(row.input_key, []).append(row)
    first_write: dict[str, str] = {}  # key -> run id of its first write
    if all_written or history:
        earliest = min((rows[0].unit for rows in history.values()), key=run_of, default=None)
        for info in ordered:
            if not info.ninputs and not info.nsamples:
                continue
            run = run_of(info.name)
            if later_writes_only and (earliest is None or run < run_of(earliest)):
                continue
            for key in read_column(layout, index_relpath(info.name), "input_key"):
                if all_written:
                    ledger.written.add(key)
                if key in history and key not in first_write:
                    first_write[key] = run
    for key, rows in history.items():
        wrote = first_write.get(key)
        if wrote is None:
            ledger.rejected[key] = rows[-1]
            ledger.repeated += len(rows) - 1
            continue
        for row in rows:
            if run_of(row.unit) < wrote:
                ledger.superseded += 1
            else:
                ledger.after_write.append((key, row.unit, wrote))
    return ledger


@dataclass
class ResumePlan:
    """What a (re)run skips and what it retries."""

    done: set[str]
    retry_rows: dict[str, RejectRow] = field(default_factory=dict)  # key -> reject re-queued
    kept_rejects: list[RejectRow] = field(default_factory=list)  # latest rejects left alone

    @property
    def retrying(self) -> Counter[str]:
        """Rejects re-queued, by reason."""
        return Counter(r.reason for r in self.retry_rows.values())

    @property
    def kept_retryable(self) -> int:
        return sum(1 for r in self.kept_rejects if r.retryable)


def plan_resume(layout: OutputLayout, units: dict[str, UnitInfo],
                retry: RetrySelection | None = None) -> ResumePlan:
    """The input keys a run skips: every written input, and every rejected one unless
    ``retry`` selects its latest reject (a retried input is listed and processed again)."""
    ledger = read_ledger(layout, units, all_written=True)
    plan = ResumePlan(done=set(ledger.written))
    for key, row in ledger.rejected.items():
        if retry is not None and retry.wants(row):
            plan.retry_rows[key] = row
        else:
            plan.done.add(key)
            plan.kept_rejects.append(row)
    return plan


def effective_reject_counts(layout: OutputLayout, rows: Any) -> Any:
    """Reject counts per (stage, reason) as inputs, for ``stats``.

    ``rows`` maps (stage, reason) to reject rows. An output whose rejects no later run
    could supersede or repeat gets ``rows`` back unchanged; otherwise each rejected
    input counts once, by its latest reject, and not at all once a later run wrote it.
    """
    from relshard.shards.recovery import committed_units

    units = committed_units(layout)
    reject_runs = [run_of(name) for name, info in units.items() if info.rejects]
    if not reject_runs or not any(run_of(name) > min(reject_runs) for name in units):
        return rows
    return dict(read_ledger(layout, units, later_writes_only=True).by_reason())
