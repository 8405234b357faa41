"""The ``relshard`` command: each command parses its options, calls :mod:`relshard.api`
and prints.

A user error (bad spec, missing file, unreachable cluster) prints one sentence
and exits 2; a run that rejects more than ``max_reject_fraction`` exits 1; a bug
shows its traceback. Commands are listed in the order of the work: run, submit,
jobs, stats, verify, show, export, build-benchmark, train, evaluate.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from relshard import __version__
from relshard.builders.commands import build_benchmark_cmd, evaluate_cmd
from relshard.cli_support import err as console
from relshard.cli_support import fail, out
from relshard.cluster.commands import jobs_app, submit
from relshard.errors import RelshardError
from relshard.report.commands import show, stats, verify
from relshard.report.export_cli import export
from relshard.training.commands import train_cmd

if TYPE_CHECKING:
    from typer._click import Context  # typer vendors click: its commands take this context

    from relshard.pipelines.runner import RunSummary  # imported lazily at run time (Ray)

ORDER = ("run", "submit", "jobs", "stats", "verify", "show", "export", "build-benchmark",
         "train", "evaluate")


class _WorkOrder(TyperGroup):
    """Lists the commands in the order of the work (typer puts sub-groups last)."""

    def list_commands(self, ctx: Context) -> list[str]:
        names = super().list_commands(ctx)
        rank = {name: i for i, name in enumerate(ORDER)}
        return sorted(names, key=lambda n: rank.get(n, len(ORDER)))


app = typer.Typer(
    cls=_WorkOrder,
    name="relshard",
    help="Turn raw videos, images and event logs into relational WebDataset shards on Ray.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        out.print(__version__)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool | None, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print the relshard version and exit.")] = None,
) -> None:
    """Turn raw videos, images and event logs into relational WebDataset shards on Ray."""


RETRY_OPTION = "--retry-rejects"
_REASONS_RE = re.compile(r"^[a-z][a-z0-9_]*(,[a-z][a-z0-9_]*)*$")


class _RunCommand(TyperCommand):
    """``--retry-rejects`` takes an optional value: bare, it means every retryable reason.

    The next argument is its value only when it looks like a list of reasons
    (``backend_unavailable,timeout``) and is not an existing file (the spec)."""

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        out: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == RETRY_OPTION:
                nxt = args[i + 1] if i + 1 < len(args) else None
                if nxt is not None and _REASONS_RE.match(nxt) and not os.path.exists(nxt):
                    out.append(f"{RETRY_OPTION}={nxt}")
                    i += 2
                    continue
                out.append(f"{RETRY_OPTION}=retryable")
            else:
                out.append(arg)
            i += 1
        return super().parse_args(ctx, out)


def _listing_notes(summary: RunSummary) -> list[tuple[str, str]]:
    rows = []
    for label, n in (("hidden files skipped", summary.hidden_skipped),
                     ("dangling symlinks skipped", summary.dangling_symlinks),
                     ("symlinks to folders already listed", summary.symlinks_skipped),
                     ("special files skipped (sockets, FIFOs)", summary.other_skipped)):
        if n:
            rows.append((label, str(n)))
    for where in summary.output_excluded:
        rows.append(("output folder left out of the sources", where))
    return rows


def _print_summary(summary: RunSummary) -> None:
    table = Table(title=f"relshard run {summary.run_id}", show_header=False)
    table.add_row("output", summary.output)
    if summary.lease_takeover:
        table.add_row("lease", summary.lease_takeover)
    table.add_row("inputs listed", str(summary.listed))
    for label, value in _listing_notes(summary):
        table.add_row(label, value)
    table.add_row("already done (resumed)", str(summary.already_done))
    if summary.retry is not None:
        retried = sum(summary.retrying.values())
        detail = ", ".join(f"{r}: {n}" for r, n in sorted(summary.retrying.items()))
        table.add_row(f"rejects retried ({summary.retry})",
                      f"{retried}" + (f" ({detail})" if detail else ""))
    table.add_row("written this run", f"{summary.inputs_written} inputs, "
                  f"{summary.samples_written} samples in {summary.units} unit(s)")
    table.add_row("rejected this run", str(summary.rejected_total))
    for reason, n in sorted(summary.rejected.items(), key=lambda kv: -kv[1]):
        table.add_row(f"  {reason}", str(n))
    fixed, kept = summary.leaks.get("fixed", 0), summary.leaks.get("kept", 0)
    table.add_row("anonymization leaks", f"{fixed + kept + summary.leak_rejects} "
                  f"({summary.leak_rate:.1%} of annotated samples): {fixed} fixed by a re-ask, "
                  f"{kept} kept with a warning, {summary.leak_rejects} rejected")
    totals = summary.manifest.get("totals", {})
    table.add_row("output totals", f"{totals.get('samples', 0)} samples in "
                  f"{totals.get('shards', 0)} shard(s), {totals.get('bytes', 0):,} bytes")
    table.add_row("time", f"{summary.seconds:.1f} s")
    out.print(table)
    if summary.retryable_left:
        out.print(f"{summary.retryable_left} rejected input(s) may succeed on a retry (an "
                  f"outage, a timeout, a crash); a plain re-run skips them, "
                  f"`relshard run SPEC {RETRY_OPTION}` runs them again.", highlight=False,
                  soft_wrap=True)


@app.command(cls=_RunCommand)
def run(
    spec: Annotated[Path, typer.Argument(help="Pipeline spec (YAML).")],
    output: Annotated[str | None, typer.Option(
        help="Output folder or URL (overrides the spec).")] = None,
    address: Annotated[str | None, typer.Option(
        envvar="RAY_ADDRESS",
        help="Ray cluster to use (auto, ray://HOST:10001); default: a local Ray.")] = None,
    num_cpus: Annotated[int | None, typer.Option(help="CPUs for a local Ray.")] = None,
    retry_rejects: Annotated[str | None, typer.Option(
        RETRY_OPTION, metavar="[REASON,...]",
        help="Run rejected inputs again: bare, those whose reject is retryable (outages, "
             "timeouts, crashes); or those of the reasons named.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="No progress bars (runtime.progress: false).")] = False,
) -> None:
    """Run a pipeline spec: decode, detect, annotate and write shards, resuming if possible."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from relshard import api

    try:
        summary = api.run(spec, output=output, address=address, num_cpus=num_cpus,
                          retry_rejects=retry_rejects, progress=False if quiet else None)
    except RelshardError as exc:
        fail(exc)
    _print_summary(summary)


# The order of the work: run it, watch it, inspect it, build a benchmark, train, score.
app.command()(submit)
app.add_typer(jobs_app, name="jobs")
app.command()(stats)
app.command()(verify)
app.command()(show)
app.command()(export)
app.command("build-benchmark")(build_benchmark_cmd)
app.command("train")(train_cmd)
app.command("evaluate")(evaluate_cmd)


@app.command(hidden=True)
def version() -> None:
    """Print the relshard version (also: relshard --version)."""
    out.print(__version__)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted; re-run the same command to resume")
        sys.exit(130)
    except ModuleNotFoundError as exc:  # an optional package a command needs: name its extra
        from relshard.deps import missing_extra

        missing = missing_extra(exc)
        if missing is None:
            raise
        console.print(f"[bold red]error:[/] {escape(str(missing))}", highlight=False,
                      soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
