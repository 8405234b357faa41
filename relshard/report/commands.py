"""The ``relshard stats``, ``verify`` and ``show`` commands (registered on the main typer app).

Each parses its options, calls :mod:`relshard.api` and prints. Heavy imports (dask,
matplotlib, pyarrow) happen inside the api, so ``relshard --help`` stays fast. Exit
codes: ``stats`` 0, or 2 for a user error; ``verify`` 0 when clean, 1 with problems, 2 for
a user error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from relshard.cli_support import Quiet, activity, err, fail, out, progress_bars
from relshard.errors import RelshardError


def stats(
    root: Annotated[str, typer.Argument(help="Output folder or URL (s3://..., gs://...).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    html: Annotated[Path | None, typer.Option(
        "--html", help="Also write a self-contained HTML report with plots to FILE.")] = None,
    compare: Annotated[str | None, typer.Option(
        "--compare", metavar="OTHER",
        help="An older build (folder, URL or saved --json report) to compare against.")] = None,
    records: Annotated[int, typer.Option(
        help="Records to sample for predicates, attribute categories and leaks (0: none).",
        min=0)] = 10_000,
    quiet: Quiet = False,
) -> None:
    """Figures of a build: counts, per-sample histograms, mixes, rejects, leaks, shard balance."""
    from relshard import api
    from relshard.report.report_text import compare_renderable, stats_renderable

    try:
        with activity(f"reading {root}", quiet or as_json):
            result = api.stats(root, records=records, compare=compare, html=html)
    except RelshardError as exc:
        fail(exc)
    _warn_missing_shards(root, result.missing_shards)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True))
        return
    out.print(stats_renderable(result.stats))
    if result.comparison is not None:
        out.print(compare_renderable(result.comparison))
    if html is not None:
        err.print(f"HTML report written to {html}")


def _warn_missing_shards(root: str, missing: list[str]) -> None:
    """One line on stderr when the index or manifest names shards that are gone."""
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5
                                          else "")
        err.print(f"[bold yellow]warning:[/] {len(missing)} shard(s) named by the index or "
                  f"manifest are missing ({shown}): their samples are counted from the index "
                  f"but cannot be read; `relshard verify {root}` lists the problems.",
                  highlight=False, soft_wrap=True)


def verify(
    root: Annotated[str, typer.Argument(help="Output folder or URL.")],
    repair: Annotated[bool, typer.Option(
        "--repair", help="Rebuild the index and manifest from the shards, then verify.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    workers: Annotated[int, typer.Option(help="Shards checked at once.", min=1)] = 4,
    quiet: Quiet = False,
) -> None:
    """Check every shard, record, index row and the manifest; exit 1 listing any problem."""
    from relshard import api
    from relshard.report.report_text import verify_renderable

    try:
        with progress_bars(quiet or as_json) as bars:
            result = api.verify(root, repair=repair, workers=workers, progress=bars)
    except RelshardError as exc:
        fail(exc)
    repaired = result.repaired
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        if repaired is not None:
            err.print(f"repair: rewrote {len(repaired.rewritten)} index file(s), kept "
                      f"{len(repaired.unchanged)}, removed {len(repaired.removed)}; manifest "
                      f"{'rebuilt' if repaired.manifest_rewritten else 'unchanged'}; "
                      f"{len(repaired.skipped_samples)} sample(s) could not be indexed")
        out.print(verify_renderable(result.report))
    if not result.ok:
        raise typer.Exit(1)


def show(
    root: Annotated[str, typer.Argument(help="Output folder or URL (s3://..., gs://...).")],
    n: Annotated[int, typer.Option("--n", "-n", help="Samples to show.", min=0)] = 48,
    seed: Annotated[int, typer.Option(help="Seed of the random pick.")] = 0,
    where: Annotated[list[str] | None, typer.Option(
        "--where", "-w", metavar="FIELD OP VALUE",
        help="Filter, repeatable, all must hold: modality=video, backend=openai, subjects>=3, "
             "key=abc*, predicate=holds, category=hair, source=model, caption~hat.")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="The HTML file (default: OUT/gallery.html for a local OUT, "
                               "./gallery.html for a URL).")] = None,
    compare: Annotated[str | None, typer.Option(
        "--compare", metavar="OTHER",
        help="Another output: the same keys from it side by side (e.g. another backend).")] = None,
    scan: Annotated[int, typer.Option(
        help="Records read at most to apply record filters (predicate=, category=...).",
        min=1)] = 2000,
    rejects: Annotated[int, typer.Option(help="Reject examples shown.", min=0)] = 30,
    quiet: Quiet = False,
) -> None:
    """Write an HTML gallery of samples: frames with boxes, crops, relations, captions, rejects."""
    from relshard import api

    try:
        with progress_bars(quiet) as progress:
            result = api.show(root, to=output, progress=progress, n=n, seed=seed,
                              where=list(where or []), compare=compare, scan=scan,
                              rejects=rejects)
    except RelshardError as exc:
        fail(exc)
    err.print(result.message, highlight=False, soft_wrap=True)
    out.print(f"gallery written to {result.path}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``stats``, ``verify``, ``show`` and ``export`` to ``app``."""
    from relshard.report.export_cli import export

    app.command()(stats)
    app.command()(verify)
    app.command()(show)
    app.command()(export)
