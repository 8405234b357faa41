"""The ``relshard stats``, ``verify`` and ``show`` commands (registered on the main typer app).

Heavy imports (dask, matplotlib, pyarrow) happen inside the commands, so
``relshard --help`` stays fast. Exit codes: ``stats`` 0, or 2 for a user error;
``verify`` 0 when clean, 1 with problems, 2 for a user error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from relshard.errors import RelshardError

err = Console(stderr=True)
out = Console()


def _fail(exc: RelshardError) -> None:
    err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def load_stats(target: str, records: int) -> Any:
    """Stats of an output root, or a report saved with ``stats --json`` (a ``.json`` file)."""
    from relshard.report.figures import BuildStats
    from relshard.report.stats import compute_stats
    from relshard.report.tables import InspectError

    path = Path(target)
    if target.endswith(".json") and path.is_file():
        try:
            return BuildStats.from_json_dict(json.loads(path.read_text()))
        except ValueError as exc:
            raise InspectError(f"{target} is not a saved `relshard stats --json` report: "
                               f"{str(exc).splitlines()[0]}") from None
    return compute_stats(target, records=records)


def samples_strip(root: str, compare: str | None, n: int = 8) -> str:
    """A strip of random samples of ``root`` for ``stats --html``, with a link to its
    gallery when ``ROOT/gallery.html`` exists (``relshard show`` writes it there)."""
    from relshard.report.gallery.build import paired_strip, sample_strip
    from relshard.report.gallery.page import strip_html

    local = "://" not in root or root.startswith("file://")
    gallery = Path(root.removeprefix("file://")) / "gallery.html"
    link = gallery.resolve().as_uri() if local and gallery.is_file() else None
    hint = f"relshard show {root}" + (f" --compare {compare}" if compare else "")
    if compare and not compare.endswith(".json"):  # another output: the same keys beside
        mine, theirs = paired_strip(root, compare, n=n)
        if mine:
            return (strip_html(mine, f"Samples of {root}", link, hint)
                    + strip_html(theirs, f"The same keys in {compare}"))
    samples = sample_strip(root, n=n)
    if not samples:
        return ""
    return strip_html(samples, "Samples", link, hint)


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
) -> None:
    """Figures of a build: counts, per-sample histograms, mixes, rejects, leaks, shard balance."""
    from relshard.report.compare import compare_stats
    from relshard.report.report_text import compare_renderable, stats_renderable

    try:
        current = load_stats(root, records)
        comparison = compare_stats(load_stats(compare, records), current) if compare else None
        if html is not None:
            from relshard.report.report_html import render_html

            try:
                strip = "" if root.endswith(".json") else samples_strip(root, compare)
                html.write_text(render_html(current, comparison, strip), encoding="utf-8")
            except OSError as exc:
                from relshard.report.tables import InspectError

                raise InspectError(f"Cannot write the HTML report to {html}: "
                                   f"{exc.strerror}.") from None
    except RelshardError as exc:
        _fail(exc)
    if not root.endswith(".json"):
        _warn_missing_shards(root, current)
    if as_json:
        data = current.to_json_dict()
        if comparison is not None:
            data["comparison"] = comparison.to_json_dict()
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    out.print(stats_renderable(current))
    if comparison is not None:
        out.print(compare_renderable(comparison))
    if html is not None:
        err.print(f"HTML report written to {html}")


def _warn_missing_shards(root: str, current: Any) -> None:
    """One line on stderr when the index or manifest names shards that are gone."""
    from relshard.report.stats import missing_shards

    try:
        missing = missing_shards(root, current)
    except (RelshardError, OSError):
        return
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
) -> None:
    """Check every shard, record, index row and the manifest; exit 1 listing any problem."""
    from relshard.report.report_text import verify_renderable
    from relshard.report.verify import verify_output

    repaired = None
    try:
        if repair:
            from relshard.report.repair import repair_output

            repaired = repair_output(root)
        report = verify_output(root, workers=workers)
    except RelshardError as exc:
        _fail(exc)
    if as_json:
        data = report.to_json_dict()
        if repaired is not None:
            data["repair"] = repaired.to_json_dict()
        typer.echo(json.dumps(data, indent=2))
    else:
        if repaired is not None:
            err.print(f"repair: rewrote {len(repaired.rewritten)} index file(s), kept "
                      f"{len(repaired.unchanged)}, removed {len(repaired.removed)}; manifest "
                      f"{'rebuilt' if repaired.manifest_rewritten else 'unchanged'}; "
                      f"{len(repaired.skipped_samples)} sample(s) could not be indexed")
        out.print(verify_renderable(report))
    if not report.ok:
        raise typer.Exit(1)


def _progress(enabled: bool) -> Any:
    """A rich progress bar on stderr when it is a terminal; silent otherwise."""
    from contextlib import nullcontext

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    if not enabled or not err.is_terminal:
        return nullcontext(None)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    console=err, transient=True)


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
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Write an HTML gallery of samples: frames with boxes, crops, relations, captions, rejects."""
    from relshard.report.gallery.build import GalleryOptions, build_gallery

    if output is None:
        local = "://" not in root or root.startswith("file://")
        output = (Path(root.removeprefix("file://")) / "gallery.html" if local
                  else Path("gallery.html"))
    opts = GalleryOptions(n=n, seed=seed, where=list(where or []), compare=compare, scan=scan,
                          rejects=rejects)
    try:
        with _progress(not quiet) as bar:
            def progress(task: str, total: int) -> Any:
                if bar is None:
                    return lambda _n: None
                tid = bar.add_task(task, total=total)
                return lambda k: bar.advance(tid, k)

            result = build_gallery(root, opts, progress)
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(result.html, encoding="utf-8")
        except OSError as exc:
            from relshard.report.tables import InspectError

            raise InspectError(f"Cannot write the gallery to {output}: {exc.strerror}.") from None
    except RelshardError as exc:
        _fail(exc)
    err.print(result.message, highlight=False, soft_wrap=True)
    out.print(f"gallery written to {output}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``stats``, ``verify``, ``show`` and ``export`` to ``app``."""
    from relshard.report.export_cli import export

    app.command()(stats)
    app.command()(verify)
    app.command()(show)
    app.command()(export)
