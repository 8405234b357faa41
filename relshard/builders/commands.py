"""The ``relshard build-benchmark`` and ``relshard evaluate`` commands (registered on the CLI).

Imports happen inside the commands, so ``relshard --help`` stays fast. Exit
codes: 0, or 2 for a user error (one sentence on stderr).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from relshard.errors import RelshardError

err = Console(stderr=True)
out = Console()


def _fail(exc: RelshardError) -> None:
    err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _fractions(text: str) -> dict[str, float]:
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) != 3 or min(parts) < 0 or sum(parts) <= 0:
        raise RelshardError(
            f"--split {text!r} must be three non-negative shares, e.g. 0.8,0.1,0.1.")
    return dict(zip(("train", "val", "test"), parts, strict=True))


def build_benchmark_cmd(
    output: Annotated[str, typer.Argument(help="A finished run's output folder (or URL).")],
    to: Annotated[str, typer.Option("--to", help="Benchmark folder to create.")],
    seed: Annotated[int, typer.Option(help="Seed of the split assignment.")] = 0,
    split: Annotated[str, typer.Option(
        "--split", help="train,val,test shares.")] = "0.8,0.1,0.1",
    max_subjects: Annotated[int, typer.Option(
        help="Subject counts at or above this form one stratum.")] = 3,
    samples_per_shard: Annotated[int, typer.Option(help="Samples per benchmark shard.")] = 1000,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing benchmark.")] = False,
) -> None:
    """Split a run into leak-free, stratified train/val/test shards with a benchmark manifest."""
    from relshard.builders.benchmark import build_benchmark

    try:
        bench = build_benchmark(output, to, fractions=_fractions(split), seed=seed,
                                max_subjects=max_subjects, samples_per_shard=samples_per_shard,
                                overwrite=overwrite)
    except RelshardError as exc:
        _fail(exc)
        return
    for name, info in bench["splits"].items():
        out.print(f"{name:5s} {info['samples']:7d} samples  {info['groups']:6d} groups  "
                  f"strata {info['strata']}")
    out.print(f"wrote {to}/benchmark.json")


def evaluate_cmd(
    bench: Annotated[str, typer.Argument(help="Benchmark folder (from build-benchmark).")],
    predictions: Annotated[str, typer.Argument(
        help="A checkpoint (.pt) from `relshard train`, predictions (JSON Lines), or "
             "'gold' to score the split's own records.")],
    split: Annotated[str, typer.Option(help="Split to score.")] = "test",
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Binding accuracy, relation precision/recall/F1 and placeholder validity on a split."""
    from relshard.builders.evaluate import evaluate_benchmark

    try:
        result = evaluate_benchmark(bench, predictions, split)
    except RelshardError as exc:
        _fail(exc)
        return
    if as_json:
        out.print_json(json.dumps(result))
        return
    if "type_accuracy" in result:
        out.print(f"split {split}: {result['events']} predicted events")
        out.print(f"next-type accuracy   {result['type_accuracy']:.4f}")
        out.print(f"NLL per event        {result['nll_per_event']:.4f}")
        out.print(f"log1p time RMSE      {result['log1p_time_rmse']:.4f}")
        return
    rel, pair = result["relations"], result["relation_pairs"]
    out.print(f"split {split}: {result['samples']} samples, {result['predicted']} predicted")
    out.print(f"binding accuracy     {result['binding_accuracy']:.4f}  ({result['bindings']})")
    out.print(f"relations   P/R/F1   {rel['precision']:.4f} {rel['recall']:.4f} {rel['f1']:.4f}")
    out.print(f"pairs       P/R/F1   {pair['precision']:.4f} {pair['recall']:.4f} "
              f"{pair['f1']:.4f}")
    validity = result["placeholder_validity"]
    out.print("placeholder validity " + (f"{validity:.4f}" if validity is not None else "n/a"))


def register(app: typer.Typer) -> None:
    """Add ``build-benchmark`` and ``evaluate`` to the main app."""
    app.command("build-benchmark")(build_benchmark_cmd)
    app.command("evaluate")(evaluate_cmd)
