"""The ``relshard train`` command (registered on the CLI; torch loads inside the command)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from relshard.errors import RelshardError

err = Console(stderr=True)
out = Console()


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
) -> None:
    """Train the binding or Hawkes model from shards (locally or on Ray); re-run to resume."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    try:
        from relshard.training.trainer import load_train_config, mean_loss, train

        cfg = load_train_config(config)
        if max_steps is not None:
            cfg = cfg.model_copy(update={"max_steps": max_steps})
        if use_ray:
            from relshard.pipelines import ray_cluster
            from relshard.training.ray_train import train_ray

            started = ray_cluster.connect(address)
            try:
                result = train_ray(cfg, num_workers=workers, use_gpu=use_gpu,
                                  cpus_per_worker=cpus_per_worker)
            finally:
                if started:
                    ray_cluster.shutdown()
        else:
            result = train(cfg)
    except RelshardError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    k = max(1, min(10, len(result.losses) // 2))
    first, last = mean_loss(result.losses, k), mean_loss(result.losses, -k)
    out.print(f"steps {result.start_step} -> {result.step}; loss first {first:.4f} "
              f"last {last:.4f}; checkpoint {result.checkpoint}")


def register(app: typer.Typer) -> None:
    """Add ``train`` to the main app."""
    app.command("train")(train_cmd)
