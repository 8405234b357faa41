"""The ``relshard build-benchmark`` and ``relshard evaluate`` commands (registered on the CLI).

Each parses its options, calls :mod:`relshard.api` and prints; imports happen inside
the commands, so ``relshard --help`` stays fast. Exit codes: 0, or 2 for a user error
(one sentence on stderr).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from relshard.cli_support import Quiet, activity, err, fail, out
from relshard.errors import RelshardError


def build_benchmark_cmd(
    output: Annotated[str, typer.Argument(help="A finished run's output folder (or URL).")],
    to: Annotated[str, typer.Option("--to", help="Benchmark folder to create.")],
    seed: Annotated[int, typer.Option(help="Seed of the split assignment.")] = 0,
    split: Annotated[str, typer.Option(
        "--split", help="train,val,test shares.")] = "0.8,0.1,0.1",
    split_by: Annotated[str, typer.Option(
        "--split-by", help="group: leak groups to splits; time: event sequences cut by "
                           "time (forecasting).")] = "group",
    min_per_split: Annotated[int, typer.Option(
        help="Fewest groups (time: windows) a split with a positive share may get.")] = 1,
    allow_empty: Annotated[bool, typer.Option(
        help="Go on when a split gets too few, recording a warning.")] = False,
    near_duplicates: Annotated[bool, typer.Option(
        help="Group perceptually identical frames (pHash).")] = True,
    phash_threshold: Annotated[int, typer.Option(
        help="Hamming distance (of 64 bits) under which two frames are near-duplicates.")] = 8,
    max_subjects: Annotated[int, typer.Option(
        help="Subject counts at or above this form one stratum.")] = 3,
    samples_per_shard: Annotated[int, typer.Option(help="Samples per benchmark shard.")] = 1000,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing benchmark.")] = False,
    quiet: Quiet = False,
) -> None:
    """Split a run into leak-free, stratified, never-empty train/val/test outputs and a card."""
    from relshard import api

    try:
        if split_by not in ("group", "time"):
            raise RelshardError(f"--split-by {split_by!r} must be group or time.")
        with activity(f"building the benchmark {to}", quiet):
            result = api.build_benchmark(
                output, to=to, split=split, seed=seed, split_by=split_by,
                min_per_split=min_per_split, allow_empty=allow_empty,
                near_duplicates=near_duplicates, phash_threshold=phash_threshold,
                max_subjects=max_subjects, samples_per_shard=samples_per_shard,
                overwrite=overwrite)
    except RelshardError as exc:
        fail(exc)
    bench = result.to_dict()
    for name, info in bench["splits"].items():
        out.print(f"{name:5s} {info['samples']:7d} samples  {info['groups']:6d} groups  "
                  f"strata {info['strata']}")
    merged = ", ".join(f"{r['rule']} {r['merged']}" for r in bench["grouping"]["rules"])
    out.print(f"{bench['grouping']['groups']} leak groups (merged by {merged})")
    for warning in bench["warnings"]:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    out.print(f"wrote {to}/benchmark.json and {to}/README.md")


def _num(value: float | None, ci: list[float] | None = None) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.4f}"
    return text + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")


def _print_result(result: dict[str, Any]) -> None:
    split = result["split"]
    if result.get("empty"):
        out.print(f"split {split}: n/a. {result['message']}")
        return
    level = int(100 * result["bootstrap"]["level"])
    if result["task"] == "events":
        out.print(f"split {split}: {result['events']} scored events (NLL in units of "
                  f"{result['time_unit_s']:g} s; {level}% bootstrap intervals over windows)")
        out.print(f"{'system':12s} {'NLL per event':>30s} {'next-type accuracy':>30s} "
                  f"{'log1p time RMSE':>16s}")
        for name, m in result["systems"].items():
            out.print(f"{name:12s} {_num(m['nll_per_event'], m.get('nll_per_event_ci')):>30s} "
                      f"{_num(m['type_accuracy'], m.get('type_accuracy_ci')):>30s} "
                      f"{_num(m['log1p_time_rmse']):>16s}")
    else:
        out.print(f"split {split}: {result['samples']} samples, {result['bindings']} bound "
                  f"attributes ({level}% bootstrap intervals over samples)")
        out.print(f"{'system':12s} {'binding accuracy':>30s} {'relation F1':>12s} "
                  f"{'pair F1':>8s} {'placeholders':>12s}")
        for name, m in result["systems"].items():
            out.print(f"{name:12s} {_num(m['binding_accuracy'], m['binding_accuracy_ci']):>30s} "
                      f"{m['relations']['f1']:12.4f} {m['relation_pairs']['f1']:8.4f} "
                      f"{_num(m['placeholder_validity']):>12s}")
        out.print("binding accuracy per subject-count stratum:")
        for name, m in result["systems"].items():
            cells = ", ".join(f"{s}: {_num(v['binding_accuracy'])} (n={v['bindings']})"
                              for s, v in m["strata"].items())
            out.print(f"  {name:12s} {cells}")
    for name, text in result["baselines"].items():
        out.print(f"[dim]{name}: {text}[/]")
    for note in result.get("notes", []) + ([result["note"]] if "note" in result else []):
        out.print(note)


def evaluate_cmd(
    bench: Annotated[str, typer.Argument(help="Benchmark folder (from build-benchmark).")],
    predictions: Annotated[str, typer.Argument(
        help="A checkpoint (.pt) from `relshard train`, predictions (JSON Lines), 'gold' to "
             "score the split's own records, or 'baselines' for the baselines alone.")],
    split: Annotated[str, typer.Option(help="Split to score.")] = "test",
    bootstrap: Annotated[int, typer.Option(help="Bootstrap replicates of the intervals.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    quiet: Quiet = False,
) -> None:
    """Score a split beside its baselines: binding or next-event metrics with 95% intervals."""
    from relshard import api

    try:
        with activity(f"scoring the {split} split", quiet or as_json):
            result = api.evaluate(bench, predictions, split=split, bootstrap=bootstrap,
                                  seed=seed).to_dict()
    except RelshardError as exc:
        fail(exc)
    if as_json:
        out.print_json(json.dumps(result))
        return
    _print_result(result)


def register(app: typer.Typer) -> None:
    """Add ``build-benchmark`` and ``evaluate`` to the main app."""
    app.command("build-benchmark")(build_benchmark_cmd)
    app.command("evaluate")(evaluate_cmd)
