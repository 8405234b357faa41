"""Compute a build's figures out of core: dask over the index and rejects parquet files.

One :func:`dask.compute` call reads each parquet partition once, reduces it in
one task to value counts (per modality, backend, model, prompt version and schema version;
per value of every integer column) and to per-shard totals. Peak memory is a few
partitions plus those counts: it grows with the number of distinct values and of
shards, not with the number of samples. Figures only the records hold (predicates,
attribute categories, anonymization leaks) come from a uniform sample of
``KEY.json`` members, read by offset (see :mod:`relshard.report.records`).
"""

from __future__ import annotations

import math
import os
from typing import Any

from relshard.report.figures import (
    BuildStats,
    Distribution,
    EventLogTimes,
    LeakFigures,
    RejectFigures,
    ShardBalance,
    SubjectSources,
)
from relshard.report.records import sample_records
from relshard.report.tables import OutputTables, check_versions
from relshard.shards.layout import OutputLayout
from relshard.shards.ledger import effective_reject_counts
from relshard.shards.recovery import committed_units

NONE_LABEL = "(none)"
INT_COLUMNS = {
    "subjects": "n_subjects", "attributes": "n_attributes", "relations": "n_relations",
    "frames": "n_frames", "caption_len": "caption_len", "rel_caption_len": "rel_caption_len",
}
LABEL_COLUMNS = ("modality", "backend", "model", "prompt_version")
LEAK_REJECT_REASON = "anonymization_leak"
DEFAULT_RECORDS = 10_000


def _dask_config() -> dict[str, Any]:
    """Threads, a few at a time: partitions in flight bound the memory."""
    return {"scheduler": "threads", "num_workers": max(1, min(4, os.cpu_count() or 1))}


def _missing(value: Any) -> bool:
    import pandas as pd

    return bool(pd.isna(value))


def _label_counts(series: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for k, v in series.items():
        label = NONE_LABEL if _missing(k) else str(k)
        out[label] = out.get(label, 0) + int(v)
    return out


def _int_counts(series: Any) -> dict[int, int]:
    return {int(k): int(v) for k, v in series.items() if not _missing(k)}


def _merge_label(counts: dict[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _partial_figures(part: Any) -> dict[str, Any]:
    """One partition reduced to value counts and per-shard totals (small, whatever its rows)."""
    out: dict[str, Any] = {
        "versions": part["schema_version"].value_counts(dropna=False),
        "per_shard": part.groupby("shard", observed=True)["size"].agg(["count", "sum"]),
        "size_kib": ((part["size"] + 1023) // 1024).value_counts(),
    }
    for name in LABEL_COLUMNS:
        out[name] = part[name].value_counts(dropna=False)
    for name, column in INT_COLUMNS.items():
        out[name] = part[column].value_counts(dropna=False)
    out.update(_partial_sources(part))
    return out


def _partial_sources(part: Any) -> dict[str, Any]:
    """Subjects per sample by source and leak statuses; null (older index files) counts as
    0 model subjects and no leak."""
    model = part["n_subjects_model"].fillna(0)
    both = part["n_subjects_both"].fillna(0)
    return {
        "src_model": model.value_counts(), "src_both": both.value_counts(),
        "src_detector": (part["n_subjects"].fillna(0) - model - both).value_counts(),
        "leak": part["leak"].value_counts(dropna=True),
        "older": part["n_subjects_model"].isna().value_counts(),
    }


def _merge_figures(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the partial counts of every partition."""
    import pandas as pd

    if not parts:
        return {}
    merged = {}
    for name in parts[0]:
        pieces = [p[name] for p in parts if len(p[name])]
        merged[name] = (pd.concat(pieces).groupby(level=0, dropna=False).sum()
                        if pieces else parts[0][name])
    return merged


def _partial_rejects(part: Any) -> Any:
    return part.groupby(["stage", "reason"], dropna=False, observed=True).size()


def _merge_rejects(parts: list[Any]) -> Any:
    import pandas as pd

    pieces = [p for p in parts if len(p)]
    if not pieces:
        return pd.Series(dtype="int64")
    return pd.concat(pieces).groupby(level=[0, 1], dropna=False).sum()


def _shard_balance(per_shard: Any) -> ShardBalance:
    if per_shard is None or len(per_shard) == 0:
        return ShardBalance()
    samples = {str(k): int(v) for k, v in per_shard["count"].items()}
    nbytes = {str(k): int(v) for k, v in per_shard["sum"].items()}
    values = list(nbytes.values())
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    counts: dict[int, int] = {}
    for n in samples.values():
        counts[n] = counts.get(n, 0) + 1
    return ShardBalance(
        shards=len(samples), samples=Distribution.from_counts(counts),
        bytes_min=min(values), bytes_mean=mean, bytes_max=max(values),
        bytes_cv=std / mean if mean else 0.0,
        smallest=min(nbytes, key=nbytes.__getitem__), largest=max(nbytes, key=nbytes.__getitem__),
        bytes_by_shard=dict(sorted(nbytes.items())), samples_by_shard=dict(sorted(samples.items())),
    )


def _shard_bytes(tables: OutputTables, balance: ShardBalance) -> int:
    """Shard file bytes from the manifest; the index's sample spans when there is none."""
    manifest = tables.manifest or {}
    shardlist = manifest.get("shardlist")
    if isinstance(shardlist, list) and shardlist:
        return int(sum(int(s.get("filesize") or 0) for s in shardlist))
    return sum(balance.bytes_by_shard.values())


def compute_stats(
    root: str | OutputLayout, records: int = DEFAULT_RECORDS, **storage_options: Any
) -> BuildStats:
    """The figures of the output at ``root`` (a local path or fsspec URL).

    ``records`` is how many ``KEY.json`` records to sample for the record-level
    figures (0 skips them; a build with fewer samples is read whole). A truncated
    or corrupt index or rejects file raises :class:`InspectError` naming it and
    the fix.
    """
    import pyarrow as pa

    tables = OutputTables.open(root, **storage_options)
    try:
        return _compute_stats(tables, records)
    except (pa.ArrowException, OSError, EOFError):
        corrupt = tables.unreadable()
        if corrupt is None:
            raise
        raise corrupt from None


def missing_shards(root: str | OutputLayout, stats: BuildStats,
                   **storage_options: Any) -> list[str]:
    """Shards (relative paths) that the index or the manifest names but that do not exist."""
    tables = OutputTables.open(root, **storage_options)
    named = set(stats.shard_balance.bytes_by_shard)
    for entry in (tables.manifest or {}).get("shardlist") or []:
        url = entry.get("url") if isinstance(entry, dict) else None
        if isinstance(url, str) and "://" not in url and not url.startswith("/"):
            named.add(url)
    layout = tables.layout
    listed: dict[str, set[str]] = {}
    missing = []
    for rel in sorted(named):
        if ".." in rel.split("/"):  # outside the output: not a shard of it (verify says so)
            continue
        folder, _, base = rel.rpartition("/")
        if folder not in listed:
            listed[folder] = set(layout.listdir(folder))
        if base not in listed[folder]:
            missing.append(rel)
    return missing


def _compute_stats(tables: OutputTables, records: int) -> BuildStats:
    import dask

    parts = [dask.delayed(_partial_figures)(p) for p in tables.index().to_delayed()]
    lazy: dict[str, Any] = {"index": dask.delayed(_merge_figures)(parts)}
    rejects = tables.rejects()
    if rejects is not None:
        lazy["rejects"] = dask.delayed(_merge_rejects)(
            [dask.delayed(_partial_rejects)(p) for p in rejects.to_delayed()])
    with dask.config.set(_dask_config()):
        (computed,) = dask.compute(lazy)
    done = dict(computed["index"])
    if "rejects" in computed:
        # a retried reject that a later run wrote counts no more: inputs, not rows
        done["rejects"] = effective_reject_counts(tables.layout, computed["rejects"])
    versions = _int_counts(done["versions"])
    check_versions(list(versions), f"the index of {tables.layout.url}")
    balance = _shard_balance(done["per_shard"])
    reject_figures = RejectFigures()
    leak_rejects = 0
    if "rejects" in done:
        by_stage: dict[str, int] = {}
        by_reason: dict[str, int] = {}
        for (stage, reason), n in done["rejects"].items():
            by_stage[str(stage)] = by_stage.get(str(stage), 0) + int(n)
            by_reason[f"{stage}: {reason}"] = int(n)
            leak_rejects += int(n) if reason == LEAK_REJECT_REASON else 0
        reject_figures = RejectFigures(
            total=sum(by_stage.values()), by_stage=_merge_label(by_stage),
            by_reason=_merge_label(by_reason),
        )
    leaks = _label_counts(done["leak"])
    manifest = tables.manifest or {}
    totals = dict(manifest.get("totals") or {})
    if "inputs_written" not in totals:  # no manifest: the unit footers know
        units = committed_units(tables.layout).values()
        totals["inputs_written"] = sum(u.ninputs for u in units) if units else None
    columns: dict[str, Any] = {name: _merge_label(_label_counts(done[name]))
                               for name in LABEL_COLUMNS}
    columns.update({name: Distribution.from_counts(_int_counts(done[name]))
                    for name in INT_COLUMNS})
    stats = BuildStats(
        root=tables.layout.url, name=manifest.get("name"), spec_hash=manifest.get("spec_hash"),
        schema_versions=versions, samples=sum(versions.values()), shards=balance.shards,
        bytes=_shard_bytes(tables, balance),
        sample_bytes=Distribution.from_counts(_int_counts(done["size_kib"])),
        inputs_written=totals.get("inputs_written"),
        event_rows_ok=sum(int(m.get("rows_ok") or 0)
                          for m in (manifest.get("events") or {}).values()),
        event_logs={k: EventLogTimes.of(m) for k, m in (manifest.get("events") or {}).items()
                    if not m.get("unreadable")},
        rejects=reject_figures, shard_balance=balance,
        leaks=LeakFigures.of(sum(versions.values()), fixed=leaks.get("fixed", 0),
                             kept=leaks.get("kept", 0), rejected=leak_rejects),
        subject_sources=SubjectSources(**{
            name: Distribution.from_counts(_int_counts(done[f"src_{name}"]))
            for name in ("detector", "model", "both")}),
        older_index_samples=int(done["older"].get(True, 0)),
        **columns,
    )
    if records > 0 and stats.samples:
        stats.records = sample_records(tables, records, stats.samples)
    return stats
