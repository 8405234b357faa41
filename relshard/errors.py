"""The exception tree of relshard.

Exceptions are for bugs, bad configuration and infrastructure. Problems with a
single input (a broken file, an unparsable model answer) are *data*: they become
:class:`relshard.record.Reject` rows in the rejects ledger, never exceptions that
end a run.

    RelshardError                 root; ``str(err)`` is one sentence a user can act on
    ├── SpecError                 the pipeline spec is invalid (names the field and the fix)
    ├── MissingDependencyError    an optional package is missing (carries the install hint)
    ├── BackendError              an annotator backend or server failed (``retryable`` flag)
    ├── ShardWriteError           a shard, index or manifest could not be written or committed
    ├── OutputConflictError       the output folder holds a run of a different spec
    └── RejectBudgetExceeded      more inputs were rejected than ``max_reject_fraction`` allows

Every exception pickles (Ray ships them between processes): each keeps its
constructor arguments in ``args``.
"""

from __future__ import annotations


class RelshardError(Exception):
    """Root of all relshard errors; the message is one actionable sentence."""


class SpecError(RelshardError):
    """The pipeline spec is invalid."""


class MissingDependencyError(RelshardError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str | None = None) -> None:
        hint = f"pip install 'relshard[{extra}]'" if extra else f"pip install {package}"
        super().__init__(package, extra)
        self.package = package
        self.extra = extra
        self.hint = hint

    def __str__(self) -> str:
        return f"The package {self.package!r} is not installed; install it with: {self.hint}"


class BackendError(RelshardError):
    """An annotator backend failed; ``retryable`` says whether trying again can help."""

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message, retryable)
        self.message = message
        self.retryable = retryable

    def __str__(self) -> str:
        return self.message


class ShardWriteError(RelshardError):
    """A shard, index, rejects file or manifest could not be written or committed."""


class OutputConflictError(RelshardError):
    """The output folder already holds the output of a different spec."""


class RejectBudgetExceeded(RelshardError):
    """More inputs were rejected than the spec's ``max_reject_fraction`` allows."""

    def __init__(self, rejected: int, seen: int, fraction: float,
                 retry_hint: str = "re-run with --retry-rejects to retry them") -> None:
        super().__init__(rejected, seen, fraction, retry_hint)
        self.rejected = rejected
        self.seen = seen
        self.fraction = fraction
        self.retry_hint = retry_hint

    def __str__(self) -> str:
        share = self.rejected / max(self.seen, 1)
        return (
            f"{self.rejected} of {self.seen} inputs ({share:.0%}) were rejected, more than "
            f"output.max_reject_fraction={self.fraction}; read the rejects ledger, fix the "
            f"cause, then {self.retry_hint} (a plain re-run skips rejected inputs)."
        )
