"""Terminal reports (rich): ``relshard stats``, ``--compare`` and ``verify`` as tables."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table

from relshard.report.compare import Comparison, fmt_number
from relshard.report.figures import DISTRIBUTIONS, MIXES, SOURCES, BuildStats, Distribution
from relshard.report.verify import VerifyReport

TOP = 10


def _pct(n: int, total: int) -> str:
    return f"{n:,} ({n / total:.1%})" if total else f"{n:,}"


def _counts_table(title: str, column: str, counts: dict[str, int], top: int = TOP) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False)
    table.add_column(column)
    table.add_column("count", justify="right")
    total = sum(counts.values())
    items = list(counts.items())
    for name, n in items[:top]:
        table.add_row(name, _pct(n, total))
    if len(items) > top:
        table.add_row(f"... {len(items) - top} more", _pct(sum(n for _, n in items[top:]), total))
    return table


def _dist_row(table: Table, label: str, d: Distribution) -> None:
    table.add_row(label, f"{d.mean:,.2f}", f"{d.min:,}", f"{d.p50:,}", f"{d.p90:,}",
                  f"{d.p99:,}", f"{d.max:,}")


def stats_renderable(stats: BuildStats) -> Group:
    """Everything of ``stats`` as rich tables."""
    head = Table(title=f"relshard stats {stats.root}", show_header=False, title_justify="left")
    head.add_row("run", f"{stats.name or '?'} (spec {stats.spec_hash or '?'})")
    head.add_row("samples", f"{stats.samples:,}")
    head.add_row("shards", f"{stats.shards:,} ({stats.bytes:,} bytes)")
    head.add_row("schema versions", ", ".join(f"v{v}: {n:,}"
                                               for v, n in stats.schema_versions.items()))
    rej = stats.rejects
    of = "of inputs and event rows" if stats.event_rows_ok else "of inputs"
    rate = stats.reject_rate
    head.add_row("rejected inputs", f"{rej.total:,} ({rate:.2%} {of})" if 0 < rate < 0.01
                 else f"{rej.total:,} ({rate:.1%} {of})")
    for key, times in stats.event_logs.items():
        head.add_row(f"event log {key}", times.describe())
    head.add_row("anonymization leaks (all)", stats.leaks.describe())
    if stats.older_index_samples:
        head.add_row("older index files", f"{stats.older_index_samples:,} samples indexed "
                     "without leak status and subject sources (counted as none)")
    rec = stats.records
    if rec.sampled:
        head.add_row("anonymization leaks (sampled)",
                     f"{rec.leaked:,} of {rec.sampled:,} sampled records ({rec.leak_rate:.2%})"
                     + (f"; e.g. {', '.join(rec.leak_examples[:3])}"
                        if rec.leak_examples else ""))
    if rec.unreadable:
        head.add_row("unreadable records", f"{rec.unreadable:,}")
    bal = stats.shard_balance
    head.add_row("shard balance", f"samples/shard p50 {bal.samples.p50:,} (min "
                 f"{bal.samples.min:,}, max {bal.samples.max:,}); bytes min {bal.bytes_min:,}, "
                 f"mean {bal.bytes_mean:,.0f}, max {bal.bytes_max:,}, cv {bal.bytes_cv:.2f}")

    dists = Table(title="per sample", title_justify="left", show_edge=False)
    for col in ("figure", "mean", "min", "p50", "p90", "p99", "max"):
        dists.add_column(col, justify="left" if col == "figure" else "right")
    for name, label in DISTRIBUTIONS.items():
        _dist_row(dists, label, getattr(stats, name))

    sources = Table(title="subjects by source", title_justify="left", show_edge=False)
    for col in ("found by", "per sample (mean)", "max", "total"):
        sources.add_column(col, justify="left" if col == "found by" else "right")
    totals = stats.subject_sources.totals()
    for name, label in SOURCES.items():
        d = getattr(stats.subject_sources, name)
        sources.add_row(label, f"{d.mean:,.2f}", f"{d.max:,}", f"{totals[name]:,}")

    parts: list[Table] = [head, dists, sources]
    for name, label in MIXES.items():
        parts.append(_counts_table(f"{label} mix", label, getattr(stats, name)))
    if rej.total:
        parts.append(_counts_table("rejects by stage", "stage", rej.by_stage))
        parts.append(_counts_table("rejects by reason", "stage: reason",
                                   rej.by_reason))
    if rec.sampled:
        parts.append(_counts_table(f"top predicates ({rec.sampled:,} sampled records)",
                                   "predicate", rec.predicates))
        parts.append(_counts_table("attribute categories (sampled records)", "category",
                                   rec.attribute_categories))
    return Group(*parts)


def compare_renderable(cmp: Comparison) -> Group:
    """A comparison as rich tables: figures, shifted mixes and notes."""
    figs = Table(title=f"{cmp.old_root} -> {cmp.new_root}", title_justify="left")
    for col in ("figure", "old", "new", "change"):
        figs.add_column(col, justify="left" if col == "figure" else "right")
    for f in cmp.figures:
        rel = f" ({f.relative:+.1%})" if f.relative is not None and f.delta else ""
        figs.add_row(f.figure, fmt_number(f.old), fmt_number(f.new),
                     fmt_number(f.delta, sign=True) + rel)
    mixes = Table(title="mix shares that changed", title_justify="left", show_edge=False)
    for col in ("mix", "category", "old", "new"):
        mixes.add_column(col, justify="right" if col in ("old", "new") else "left")
    for m in cmp.mixes:
        if m.old_count != m.new_count or abs(m.old_share - m.new_share) > 1e-9:
            mixes.add_row(m.mix, m.category, f"{m.old_share:.1%} ({m.old_count:,})",
                          f"{m.new_share:.1%} ({m.new_count:,})")
    notes = Table(title="notes", title_justify="left", show_header=False, show_edge=False)
    for note in cmp.notes or ["no notable change"]:
        notes.add_row(note)
    return Group(figs, mixes, notes) if mixes.row_count else Group(figs, notes)


def verify_renderable(report: VerifyReport) -> Table:
    """A verify report: the counts, then one row per problem."""
    status = "[green]OK[/]" if report.ok else f"[red]{len(report.problems)} problem(s)[/]"
    table = Table(title=f"relshard verify {report.root}: {status}", title_justify="left",
                  show_header=False)
    table.add_row("units / shards / samples",
                  f"{report.units:,} / {report.shards:,} / {report.samples:,}")
    for problem in report.problems:
        table.add_row("[red]problem[/]", problem)
    return table


def print_stats(stats: BuildStats, console: Console) -> None:
    console.print(stats_renderable(stats))
