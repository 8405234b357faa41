"""The ``relshard train`` command (registered on the CLI; torch loads inside the api call)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from relshard.cli_support import Quiet, activity, fail, out
from relshard.errors import RelshardError


def train_cmd(
    config: Annotated[Path, typer.Argument(help="Training config (YAML).")],
    max_steps: Annotated[int | None, typer.Option(
        help="Stop after this many steps in total (overrides the config).")] = None,
    use_ray: Annotated[bool, typer.Option(
        "--ray", help="Train through Ray Train's TorchTrainer, streaming a Ray Dataset.")] = False,
    address: Annotated[str | None, typer.Option(
        help="Ray cluster address with --ray (default: a local Ray).")] = None,
    workers: Annotated[int, typer.Option(help="Ray Train workers with --ray.")] = 1,
    use_gpu: Annotated[bool, typer.Option(help="GPU workers with --ray.")] = False,
    cpus_per_worker: Annotated[float | None, typer.Option(
        help="CPUs each Ray Train worker reserves (default 1); leave some for reading.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    quiet: Quiet = False,
) -> None:
    """Train the binding or Hawkes model from shards (locally or on Ray); re-run to resume."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    from relshard import api

    try:
        with activity(f"training from {config}", quiet or verbose):
            summary = api.train(config, max_steps=max_steps, use_ray=use_ray, address=address,
                                workers=workers, use_gpu=use_gpu,
                                cpus_per_worker=cpus_per_worker)
    except RelshardError as exc:
        fail(exc)
    result = summary.result
    out.print(f"steps {result.start_step} -> {result.step}; loss first {summary.first_loss:.4f} "
              f"last {summary.last_loss:.4f}; checkpoint {result.checkpoint}")


def register(app: typer.Typer) -> None:
    """Add ``train`` to the main app."""
    app.command("train")(train_cmd)
