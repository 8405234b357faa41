"""The figures of a build as pydantic models: what ``relshard stats`` prints, plots and diffs.

Every model serializes to JSON (``relshard stats --json``) and back, so a saved
report can be compared with a later build. Distributions are kept as exact value
counts (an integer column has few distinct values however long the index is), from
which quantiles and histograms are derived without a second pass.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

STATS_FORMAT = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Distribution(_Model):
    """An integer-valued column: exact counts per value and the usual summaries."""

    counts: dict[int, int] = Field(default_factory=dict, description="value -> samples")
    total: int = 0
    mean: float = 0.0
    min: int = 0
    p50: int = 0
    p90: int = 0
    p99: int = 0
    max: int = 0

    @classmethod
    def from_counts(cls, counts: dict[int, int]) -> Distribution:
        """Summaries of ``counts`` (value -> number of samples); empty counts give zeros."""
        items = sorted((int(v), int(n)) for v, n in counts.items() if n > 0)
        total = sum(n for _, n in items)
        if not total:
            return cls()

        def quantile(q: float) -> int:
            target = max(1, math.ceil(q * total))
            seen = 0
            for value, n in items:
                seen += n
                if seen >= target:
                    return value
            return items[-1][0]

        return cls(
            counts=dict(items), total=total,
            mean=sum(v * n for v, n in items) / total,
            min=items[0][0], p50=quantile(0.5), p90=quantile(0.9), p99=quantile(0.99),
            max=items[-1][0],
        )

    def histogram(self, bins: int = 30) -> tuple[list[float], list[int]]:
        """``(edges, counts)`` of at most ``bins`` equal-width integer bins."""
        if not self.counts:
            return [0.0, 1.0], [0]
        lo, hi = self.min, self.max
        width = max(1, math.ceil((hi - lo + 1) / bins))
        nbins = max(1, math.ceil((hi - lo + 1) / width))
        out = [0] * nbins
        for value, n in self.counts.items():
            out[(value - lo) // width] += n
        return [float(lo + i * width) for i in range(nbins + 1)], out


class ShardBalance(_Model):
    """How evenly samples and bytes spread over the shards."""

    shards: int = 0
    samples: Distribution = Field(default_factory=Distribution)
    bytes_min: int = 0
    bytes_mean: float = 0.0
    bytes_max: int = 0
    bytes_cv: float = Field(default=0.0, description="std / mean of shard bytes")
    smallest: str | None = None
    largest: str | None = None
    bytes_by_shard: dict[str, int] = Field(default_factory=dict)
    samples_by_shard: dict[str, int] = Field(default_factory=dict)


class RecordFigures(_Model):
    """Figures only the records (``KEY.json``) hold, from a uniform sample of them."""

    sampled: int = 0
    requested: int = 0
    predicates: dict[str, int] = Field(default_factory=dict)
    attribute_categories: dict[str, int] = Field(default_factory=dict)
    subject_kinds: dict[str, int] = Field(default_factory=dict)
    leaked: int = Field(default=0, description="sampled records whose relational caption "
                                               "names an attribute's text")
    leak_rate: float = 0.0
    leak_examples: list[str] = Field(default_factory=list, description="keys, at most 10")
    unreadable: int = 0


class LeakFigures(_Model):
    """Anonymization leaks over the whole build, from the index's ``leak`` column and the
    rejects ledger: what the annotator found, not a re-check of the records."""

    annotated: int = Field(default=0, description="samples written + leak rejects")
    fixed: int = Field(default=0, description="samples whose leak a re-ask removed")
    kept: int = Field(default=0, description="samples written with a leak (on_leak: keep)")
    rejected: int = Field(default=0, description="inputs rejected as anonymization_leak")
    rate: float = Field(default=0.0, description="(fixed + kept + rejected) / annotated")

    @classmethod
    def of(cls, samples: int, fixed: int, kept: int, rejected: int) -> LeakFigures:
        annotated = samples + rejected
        total = fixed + kept + rejected
        return cls(annotated=annotated, fixed=fixed, kept=kept, rejected=rejected,
                   rate=total / annotated if annotated else 0.0)

    @property
    def total(self) -> int:
        return self.fixed + self.kept + self.rejected

    def describe(self) -> str:
        """One line: how many, the rate, re-asks that fixed a leak, kept, rejected."""
        return (f"{self.total:,} ({self.rate:.2%} of {self.annotated:,} annotated samples): "
                f"{self.fixed:,} fixed by a re-ask, {self.kept:,} kept with a warning, "
                f"{self.rejected:,} rejected")


class SubjectSources(_Model):
    """Subjects per sample by who found them: only the detector, only the model, or both."""

    detector: Distribution = Field(default_factory=Distribution)
    model: Distribution = Field(default_factory=Distribution)
    both: Distribution = Field(default_factory=Distribution)

    def totals(self) -> dict[str, int]:
        """Subjects in the build per source."""
        return {name: sum(v * n for v, n in getattr(self, name).counts.items())
                for name in ("detector", "model", "both")}


class RejectFigures(_Model):
    """The rejects ledger by stage and by reason."""

    total: int = 0
    by_stage: dict[str, int] = Field(default_factory=dict)
    by_reason: dict[str, int] = Field(default_factory=dict, description="'stage: reason' -> n")


class EventLogTimes(_Model):
    """One event log's timestamps (the manifest's ``events.<log>``): resolution and ties."""

    uri: str = ""
    resolution: str = Field(default="continuous", description="1 day, 1 h, 1 min, 1 s, 1 ms")
    resolution_s: float | None = None
    ties: str = Field(default="keep", description="events.ties: keep or spread")
    spread: bool = False
    tied_events: int = Field(default=0, description="events sharing their instant with another")
    events_checked: int = 0
    ties_exact: bool = True

    @classmethod
    def of(cls, meta: dict[str, Any]) -> EventLogTimes:
        ties = meta.get("ties") or {}
        return cls(uri=str(meta.get("uri") or ""),
                   resolution=meta.get("time_resolution") or "continuous",
                   resolution_s=meta.get("time_resolution_s"), ties=ties.get("mode", "keep"),
                   spread=bool(ties.get("spread")), tied_events=int(ties.get("tied_events", 0)),
                   events_checked=int(ties.get("events_checked", 0)),
                   ties_exact=bool(ties.get("exact", True)))

    def describe(self) -> str:
        share = (f"{self.tied_events:,} of {self.events_checked:,} events share an instant"
                 + ("" if self.ties_exact else " (first rows checked)"))
        return f"resolution {self.resolution}; {share}; ties: {self.ties}" + (
            " (spread within the step)" if self.spread else "")


class BuildStats(_Model):
    """Everything ``relshard stats`` reports about one output folder."""

    format: int = STATS_FORMAT
    root: str
    name: str | None = None
    spec_hash: str | None = None
    schema_versions: dict[int, int] = Field(default_factory=dict, description="version -> samples")
    samples: int = 0
    shards: int = 0
    bytes: int = Field(default=0, description="bytes of the shard files")
    sample_bytes: Distribution = Field(default_factory=Distribution,
                                       description="bytes a sample spans in its shard (KiB)")
    inputs_written: int | None = None
    event_rows_ok: int = Field(default=0, description="good rows of event logs (the manifest)")
    event_logs: dict[str, EventLogTimes] = Field(
        default_factory=dict, description="time resolution and ties per event log (manifest)")
    modality: dict[str, int] = Field(default_factory=dict)
    subjects: Distribution = Field(default_factory=Distribution)
    attributes: Distribution = Field(default_factory=Distribution)
    relations: Distribution = Field(default_factory=Distribution)
    frames: Distribution = Field(default_factory=Distribution)
    caption_len: Distribution = Field(default_factory=Distribution)
    rel_caption_len: Distribution = Field(default_factory=Distribution)
    backend: dict[str, int] = Field(default_factory=dict)
    model: dict[str, int] = Field(default_factory=dict)
    prompt_version: dict[str, int] = Field(default_factory=dict)
    rejects: RejectFigures = Field(default_factory=RejectFigures)
    leaks: LeakFigures = Field(default_factory=LeakFigures)
    subject_sources: SubjectSources = Field(default_factory=SubjectSources)
    older_index_samples: int = Field(
        default=0, description="samples of index files written before the leak and subject-"
        "source columns: counted as no leak and detector subjects")
    shard_balance: ShardBalance = Field(default_factory=ShardBalance)
    records: RecordFigures = Field(default_factory=RecordFigures)

    @property
    def reject_rate(self) -> float:
        """Rejected inputs over all inputs seen (written inputs from the index when needed);
        an event log's rows count as inputs, as in the run's reject budget (its bad rows are
        rejects one by one, its good rows travel as a few bucket inputs)."""
        written = self.inputs_written if self.inputs_written is not None else self.samples
        seen = written + self.rejects.total + self.event_rows_ok
        return self.rejects.total / seen if seen else 0.0

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON form (``--json``)."""
        data = self.model_dump(mode="json")
        data["reject_rate"] = self.reject_rate
        return data

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> BuildStats:
        """Load a saved ``--json`` report."""
        return cls.model_validate({k: v for k, v in data.items() if k != "reject_rate"})


DISTRIBUTIONS = {
    "subjects": "subjects per sample",
    "attributes": "attributes per sample",
    "relations": "relations per sample",
    "frames": "frames per sample",
    "caption_len": "caption length (chars)",
    "rel_caption_len": "relational caption length (chars)",
    "sample_bytes": "sample size (KiB)",
}
SOURCES = {"detector": "detector only", "model": "model only", "both": "detector and model"}
MIXES = {"modality": "modality", "backend": "backend", "model": "model",
         "prompt_version": "prompt version"}
