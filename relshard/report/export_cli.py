"""The ``relshard export`` command (registered by :func:`relshard.report.commands.register`).

Light at import: the export itself (pyarrow, numpy, datasets) is imported when it runs.
Exit codes: 0 exported (skipped samples are listed), 2 a user error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from relshard.errors import RelshardError

err = Console(stderr=True)


def _progress(enabled: bool) -> Any:
    from contextlib import nullcontext

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    if not enabled or not err.is_terminal:
        return nullcontext(None)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=err, transient=True)


def export(
    root: Annotated[str, typer.Argument(help="The run: output folder or URL (s3://...).")],
    to: Annotated[Path, typer.Option("--to", help="Folder to write (DIR/data/*.parquet).")],
    fmt: Annotated[str, typer.Option(
        "--format", help="parquet (images as bytes) or hf (datasets Image features).")
    ] = "parquet",
    rows_per_file: Annotated[int, typer.Option(help="Rows per Parquet file.", min=1)] = 10_000,
    row_group_rows: Annotated[int, typer.Option(help="Rows per row group at most.",
                                                min=1)] = 256,
    row_group_mb: Annotated[int, typer.Option(help="MB of payload per row group at most.",
                                              min=1)] = 64,
    overwrite: Annotated[bool, typer.Option("--overwrite",
                                            help="Replace an earlier export in --to.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Write a run as Parquet with one schema for every sample (Hugging Face datasets, pandas)."""
    from relshard.report.export import ExportOptions, export_run

    if fmt not in ("parquet", "hf"):
        err.print(f"[bold red]error:[/] --format must be parquet or hf, not {fmt!r}.",
                  highlight=False)
        raise typer.Exit(2)
    opts = ExportOptions(format=fmt,  # type: ignore[arg-type]
                         rows_per_file=rows_per_file, row_group_rows=row_group_rows,
                         row_group_bytes=row_group_mb * 2**20, overwrite=overwrite)
    try:
        with _progress(not quiet and not as_json) as bar:
            def progress(total: int) -> Any:
                if bar is None:
                    return lambda _n: None
                task = bar.add_task("exporting", total=total)
                return lambda k: bar.advance(task, k)

            result = export_run(root, to, opts, progress)
    except RelshardError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(result.to_json_dict(), indent=2))
        return
    err.print(f"exported {result.rows} samples into {len(result.files)} file(s) under "
              f"{to / 'data'}" + (f"; skipped {result.skipped} unreadable sample(s), e.g. "
                                  f"{next(iter(result.problems.items()))}"
                                  if result.skipped else ""), highlight=False, soft_wrap=True)
