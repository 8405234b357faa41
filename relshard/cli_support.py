"""What every ``relshard`` command shares: the consoles, the user-error exit, ``--quiet``,
and the progress display (on stderr, only when it is a terminal)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from relshard.errors import RejectBudgetExceeded, RelshardError

err = Console(stderr=True)
out = Console()

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")]


def fail(exc: RelshardError) -> NoReturn:
    """Print the error's one sentence; exit 1 for a blown reject budget, else 2."""
    # escaped: "pip install 'relshard[pipeline]'" is not rich markup
    err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    raise typer.Exit(1 if isinstance(exc, RejectBudgetExceeded) else 2)


def show_progress(quiet: bool) -> bool:
    """Progress is shown on a terminal unless ``--quiet``; never into a pipe or file."""
    return not quiet and err.is_terminal


@contextmanager
def activity(description: str, quiet: bool) -> Iterator[None]:
    """A spinner with the elapsed time while a step without finer progress runs."""
    if not show_progress(quiet):
        yield
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        bar.add_task(description, total=None)
        yield


@contextmanager
def progress_bars(quiet: bool) -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """``factory(description, total) -> advance(n)``: bars on a terminal, no-ops elsewhere."""
    if not show_progress(quiet):
        yield lambda _task, _total: (lambda _n: None)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=err, transient=True) as bar:
        def factory(task: str, total: int) -> Callable[[int], None]:
            tid = bar.add_task(task, total=total)

            def advance(k: int) -> None:
                bar.advance(tid, k)

            return advance

        yield factory

