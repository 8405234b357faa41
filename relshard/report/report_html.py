"""``relshard stats --html FILE``: a self-contained HTML report with inline plots.

One file, no scripts, no external resources: every plot is a matplotlib (Agg)
PNG embedded as a ``data:`` URI, every figure also appears as a table, and all
text from the data is HTML-escaped. It opens offline in any browser and can be
attached to a ticket or a pull request as it is.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from typing import Any

from relshard.errors import MissingDependencyError
from relshard.report.compare import Comparison, fmt_number
from relshard.report.figures import DISTRIBUTIONS, MIXES, SOURCES, BuildStats, Distribution

TOP = 15
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.2em .8em;border-bottom:1px solid #eee;
text-align:right}td:first-child,th:first-child{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:1em}.plot{flex:1 1 480px}img{max-width:100%}
.bad{color:#b00}.ok{color:#070}
"""


def _plt() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise MissingDependencyError("matplotlib", "stats") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(draw: Callable[[Any], None], title: str) -> str:
    """Draw on a fresh axes and return an ``<img>`` with the PNG inline."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=96)
    try:
        draw(ax)
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (f'<div class="plot"><img alt="{html.escape(title)}" '
            f'src="data:image/png;base64,{data}"></div>')


def _dist_plot(d: Distribution, title: str) -> str:
    def draw(ax: Any) -> None:
        if d.max - d.min < 40:
            ax.bar(list(d.counts), list(d.counts.values()), width=0.8, color="#4c72b0")
            ax.xaxis.get_major_locator().set_params(integer=True)
        else:
            edges, counts = d.histogram(40)
            ax.stairs(counts, edges, fill=True, color="#4c72b0")
        ax.set_ylabel("samples")
    return _png(draw, title)


def _bar_plot(counts: dict[str, int], title: str) -> str:
    items = list(counts.items())[:TOP]

    def draw(ax: Any) -> None:
        names = [n[:30] for n, _ in items][::-1]
        ax.barh(names or ["(none)"], [c for _, c in items][::-1] or [0], color="#55a868")
        ax.tick_params(axis="y", labelsize=7)
    return _png(draw, title)


def _shard_plot(stats: BuildStats) -> str:
    sizes = sorted(stats.shard_balance.bytes_by_shard.values())

    def draw(ax: Any) -> None:
        mib = [s / 2**20 for s in sizes]
        if len(mib) <= 200:
            ax.bar(range(1, len(mib) + 1), mib, width=0.8, color="#c44e52")
        else:
            ax.fill_between(range(1, len(mib) + 1), mib, color="#c44e52")
        ax.set_ylim(bottom=0)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("shards, smallest to largest")
        ax.set_ylabel("MiB")
    return _png(draw, "shard size balance")


def _table(rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _counts_rows(counts: dict[str, int]) -> list[tuple[Any, ...]]:
    total = sum(counts.values()) or 1
    return [(k, f"{v:,}", f"{v / total:.1%}") for k, v in list(counts.items())[:TOP]]


def _summary(stats: BuildStats) -> str:
    rec, bal = stats.records, stats.shard_balance
    rows = [
        ("run", f"{stats.name or '?'} (spec {stats.spec_hash or '?'})"),
        ("samples", f"{stats.samples:,}"), ("shards", f"{stats.shards:,}"),
        ("bytes", f"{stats.bytes:,}"),
        ("schema versions", ", ".join(f"v{v}: {n:,}" for v, n in stats.schema_versions.items())),
        ("rejected inputs", f"{stats.rejects.total:,} ({stats.reject_rate:.1%})"),
        ("anonymization leaks (all)", stats.leaks.describe()),
        ("anonymization leak rate (sampled)",
         f"{rec.leak_rate:.2%} of {rec.sampled:,} sampled records"),
        ("shard bytes", f"min {bal.bytes_min:,} / mean {bal.bytes_mean:,.0f} / max "
                        f"{bal.bytes_max:,} (cv {bal.bytes_cv:.2f})"),
    ]
    return _table(rows, ("figure", "value"))


def _compare_section(cmp: Comparison) -> str:
    rows = [(f.figure, fmt_number(f.old), fmt_number(f.new), fmt_number(f.delta, sign=True))
            for f in cmp.figures]
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in cmp.notes) or "<li>no notable change</li>"
    return (f"<h2>Compared with {html.escape(cmp.old_root)}</h2><ul>{notes}</ul>"
            + _table(rows, ("figure", "old", "new", "change")))


def _sources_table(stats: BuildStats) -> str:
    totals = stats.subject_sources.totals()
    rows = [(label, f"{d.mean:,.2f}", d.max, f"{totals[name]:,}")
            for name, label in SOURCES.items() for d in [getattr(stats.subject_sources, name)]]
    return _table(rows, ("found by", "per sample (mean)", "max", "total"))


def render_html(stats: BuildStats, comparison: Comparison | None = None,
                samples_html: str = "") -> str:
    """The whole report as one HTML string; ``samples_html`` (a strip of samples, see
    :func:`relshard.report.gallery.page.strip_html`) goes after the summary."""
    plots = [_dist_plot(getattr(stats, name), label) for name, label in DISTRIBUTIONS.items()]
    dist_rows = [(label, f"{d.mean:,.2f}", d.min, d.p50, d.p90, d.p99, d.max)
                 for name, label in DISTRIBUTIONS.items() for d in [getattr(stats, name)]]
    mixes = {f"{label} mix": getattr(stats, name) for name, label in MIXES.items()}
    mixes["rejects by stage"] = stats.rejects.by_stage
    mixes["rejects by reason"] = stats.rejects.by_reason
    mixes["top predicates (sampled records)"] = stats.records.predicates
    mixes["attribute categories (sampled records)"] = stats.records.attribute_categories
    mix_plots = [_bar_plot(c, t) for t, c in mixes.items() if c]
    mix_tables = "".join(f"<h3>{html.escape(t)}</h3>" + _table(_counts_rows(c),
                                                                ("value", "count", "share"))
                         for t, c in mixes.items() if c)
    title = html.escape(f"relshard stats: {stats.root}")
    parts = [
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f'<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<style>{CSS}</style></head><body><h1>{title}</h1>",
        _summary(stats),
        samples_html,
        _compare_section(comparison) if comparison else "",
        "<h2>Per sample</h2>", f'<div class="grid">{"".join(plots)}</div>',
        _table(dist_rows, ("figure", "mean", "min", "p50", "p90", "p99", "max")),
        "<h3>Subjects by source</h3>", _sources_table(stats),
        "<h2>Mixes, rejects, predicates</h2>", f'<div class="grid">{"".join(mix_plots)}</div>',
        mix_tables,
        "<h2>Shards</h2>", f'<div class="grid">{_shard_plot(stats)}</div>',
        "</body></html>",
    ]
    return "".join(parts)
