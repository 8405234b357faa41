"""``relshard evaluate BENCH PREDICTIONS``: score predictions on a benchmark split.

``PREDICTIONS`` is a checkpoint (``.pt``, from ``relshard train``): a binding
model predicts the split's relations; a Hawkes model is scored on the split's
event windows (next-type accuracy, negative log-likelihood per event). Or it
is a JSON Lines file of predictions (see :mod:`relshard.builders.metrics`), or
``gold`` to score the split's own records
(a sanity check: every metric is 1.0 on a consistent benchmark, except where
the annotator's own captions fail the placeholder check).
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

import fsspec

from relshard.builders.benchmark import BENCH_NAME, BenchmarkError
from relshard.builders.metrics import evaluate_relations
from relshard.training.catalog import Catalog, ShardReader
from relshard.training.decoding import CorruptSample, decode_sample, split_members


def _is_hawkes(checkpoint: str) -> bool:
    from relshard.training.trainer import load_checkpoint

    return load_checkpoint(checkpoint)["config"].get("task") == "hawkes"


def _split_manifest(bench: str, split: str) -> str:
    fs, root = fsspec.core.url_to_fs(bench)
    path = posixpath.join(root, BENCH_NAME)
    if not fs.exists(path):
        raise BenchmarkError(f"{bench} holds no benchmark.json; build one with "
                             "`relshard build-benchmark`.")
    with fs.open(path, "rb") as f:
        info = json.load(f)
    if split not in info["splits"]:
        raise BenchmarkError(f"The benchmark has no split {split!r}; it has "
                             f"{sorted(info['splits'])}.")
    return posixpath.join(bench, info["splits"][split]["manifest"])


def split_records(bench: str, split: str) -> dict[str, dict[str, Any]]:
    """The ``KEY.json`` records of one split of a benchmark, by key."""
    catalog = Catalog.open(_split_manifest(bench, split))
    reader = ShardReader(catalog)
    records: dict[str, dict[str, Any]] = {}
    try:
        for shard in range(len(catalog.urls)):
            for offset, size in reader.spans(shard).tolist():
                try:
                    sample = decode_sample(split_members(reader.read(shard, offset, size)),
                                           keep=frozenset({"json"}))
                except CorruptSample:
                    continue
                records[sample["__key__"]] = sample["json"]
    finally:
        reader.close()
    return records


def load_predictions(path: str) -> dict[str, dict[str, Any]]:
    """A JSON Lines file of predictions, by key."""
    out: dict[str, dict[str, Any]] = {}
    try:
        with fsspec.open(path, "r", encoding="utf-8") as f:
            lines = list(f)
    except FileNotFoundError:
        raise BenchmarkError(f"No predictions file at {path}.") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            pred = json.loads(line)
            out[str(pred["key"])] = pred
        except (ValueError, KeyError, TypeError):
            raise BenchmarkError(f"Line {n} of {path} is not a JSON object with a key.") from None
    return out


def evaluate_benchmark(bench: str, predictions: str, split: str = "test") -> dict[str, Any]:
    """Metrics of ``predictions`` (a ``.pt`` checkpoint, a JSONL path, or ``gold``)."""
    if predictions.endswith(".pt") and _is_hawkes(predictions):
        from relshard.training.predict import evaluate_events

        result = evaluate_events(predictions, _split_manifest(bench, split))
        result["split"] = split
        return result
    records = split_records(bench, split)
    if predictions == "gold":
        preds = records
    elif predictions.endswith(".pt"):
        from relshard.training.predict import predict_with_checkpoint

        preds = predict_with_checkpoint(predictions, records)
    else:
        preds = load_predictions(predictions)
    result = evaluate_relations(records, preds)
    result["split"] = split
    return result
