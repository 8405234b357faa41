"""The reject budget (``output.max_reject_fraction``): one check, for the running write
tasks (through the run monitor's totals) and for the driver at the end of a run."""

from __future__ import annotations

from relshard.errors import RejectBudgetExceeded


def over_budget(rejected: int, seen: int, fraction: float, min_seen: int = 1) -> bool:
    """Whether ``rejected`` of ``seen`` inputs is more than ``fraction`` allows.

    ``min_seen``: no verdict before this many inputs were seen (``reject_check_after``
    while a run goes, so that a few early rejects do not stop it; 1 at the end).
    """
    return seen >= max(min_seen, 1) and rejected > fraction * seen


def check_reject_budget(rejected: int, seen: int, fraction: float, min_seen: int = 1) -> None:
    """Raise :class:`RejectBudgetExceeded` when :func:`over_budget` says so."""
    if over_budget(rejected, seen, fraction, min_seen):
        raise RejectBudgetExceeded(rejected, seen, fraction)
