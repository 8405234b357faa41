"""``relshard stats A --compare B``: what changed between two builds.

Both sides are :class:`BuildStats` (computed from an output folder, or loaded
from a saved ``--json`` report). The comparison lists, for each headline figure,
the old and new value and the change; for each mix (modality, backend, model,
prompt version, reject reasons, predicates, attribute categories) the shift of
every category's *share*, so builds of different sizes compare fairly; and
plain-language notes for what an ML engineer should look at first.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from relshard.report.figures import BuildStats

SHARE_NOTE = 0.05  # a category whose share moves by 5 points or more gets a note
RATE_NOTE = 0.01  # reject or leak rate moving by a point or more gets a note


def fmt_number(value: float, sign: bool = False) -> str:
    """An integer with thousands separators, anything else with 4 significant digits."""
    plus = "+" if sign else ""
    if float(value).is_integer():
        return f"{int(value):{plus},}"
    return f"{value:{plus}.4g}"


class FigureChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    figure: str
    old: float
    new: float

    @property
    def delta(self) -> float:
        return self.new - self.old

    @property
    def relative(self) -> float | None:
        return None if self.old == 0 else self.delta / abs(self.old)


class MixChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mix: str
    category: str
    old_share: float
    new_share: float
    old_count: int
    new_count: int


class Comparison(BaseModel):
    """The differences of ``new`` against ``old``."""

    model_config = ConfigDict(extra="forbid")

    old_root: str
    new_root: str
    figures: list[FigureChange] = Field(default_factory=list)
    mixes: list[MixChange] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    def to_json_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        for item, change in zip(data["figures"], self.figures, strict=True):
            item["delta"], item["relative"] = change.delta, change.relative
        return data


def _figures(stats: BuildStats) -> dict[str, float]:
    return {
        "samples": stats.samples, "shards": stats.shards, "bytes": stats.bytes,
        "rejected inputs": stats.rejects.total, "reject rate": stats.reject_rate,
        "subjects / sample (mean)": stats.subjects.mean,
        "attributes / sample (mean)": stats.attributes.mean,
        "relations / sample (mean)": stats.relations.mean,
        "caption length (p50)": stats.caption_len.p50,
        "relational caption length (p50)": stats.rel_caption_len.p50,
        "samples without relations": stats.relations.counts.get(0, 0),
        "shard bytes cv": stats.shard_balance.bytes_cv,
        "leak rate (sampled)": stats.records.leak_rate,
        "leak rate (all)": stats.leaks.rate,
        "leaks fixed by a re-ask": stats.leaks.fixed,
        "leaks kept": stats.leaks.kept,
        "leak rejects": stats.leaks.rejected,
        "detector-only subjects / sample (mean)": stats.subject_sources.detector.mean,
        "model-only subjects / sample (mean)": stats.subject_sources.model.mean,
        "subjects found by both / sample (mean)": stats.subject_sources.both.mean,
    }


def _mixes(stats: BuildStats) -> dict[str, dict[str, int]]:
    return {
        "modality": stats.modality, "backend": stats.backend, "model": stats.model,
        "prompt version": stats.prompt_version, "reject reason": stats.rejects.by_reason,
        "predicate": stats.records.predicates,
        "attribute category": stats.records.attribute_categories,
    }


def _share(counts: dict[str, int], category: str) -> float:
    total = sum(counts.values())
    return counts.get(category, 0) / total if total else 0.0


def compare_stats(old: BuildStats, new: BuildStats) -> Comparison:
    """Figures, mix shares and notes of ``new`` relative to ``old``."""
    cmp = Comparison(old_root=old.root, new_root=new.root)
    a, b = _figures(old), _figures(new)
    cmp.figures = [FigureChange(figure=k, old=float(a[k]), new=float(b[k])) for k in a]
    old_mix, new_mix = _mixes(old), _mixes(new)
    for mix in old_mix:
        before, after = old_mix[mix], new_mix[mix]
        for cat in sorted(set(before) | set(after)):
            change = MixChange(mix=mix, category=cat, old_share=_share(before, cat),
                               new_share=_share(after, cat), old_count=before.get(cat, 0),
                               new_count=after.get(cat, 0))
            cmp.mixes.append(change)
            if cat not in before:
                cmp.notes.append(f"new {mix}: {cat!r} ({change.new_count})")
            elif cat not in after:
                cmp.notes.append(f"{mix} {cat!r} is gone (was {change.old_count})")
            elif abs(change.new_share - change.old_share) >= SHARE_NOTE:
                cmp.notes.append(f"{mix} {cat!r}: share {change.old_share:.1%} -> "
                                 f"{change.new_share:.1%}")
    for label in ("reject rate", "leak rate (sampled)", "leak rate (all)"):
        if abs(b[label] - a[label]) >= RATE_NOTE:
            word = "rose" if b[label] > a[label] else "fell"
            cmp.notes.append(f"{label} {word}: {a[label]:.1%} -> {b[label]:.1%}")
    if set(old.schema_versions) != set(new.schema_versions):
        cmp.notes.append(f"schema versions differ: {sorted(old.schema_versions)} -> "
                         f"{sorted(new.schema_versions)}")
    return cmp
