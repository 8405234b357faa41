"""``relshard evaluate BENCH PREDICTIONS``: score predictions on a split, beside baselines.

``PREDICTIONS`` is a checkpoint (``.pt``, from ``relshard train``, local or
``--ray``): a binding model predicts the split's relations; a Hawkes model is
scored on the split's event windows. Or a JSON Lines file of predictions (see
:mod:`relshard.builders.metrics`), ``gold`` to score the split's own records (a
sanity check), or ``baselines`` to report the baselines alone.

Every score comes with the trivial baselines of :mod:`relshard.builders.baselines`
on the same split (binding: the containment / nearest-subject rule and the
majority subject and predicate; events: a Poisson process per type and one
Hawkes process fitted to the whole training split), each with a bootstrap 95%
interval (samples, or event windows, drawn with replacement), and for binding
per subject-count stratum. An empty split is not scored: the result says so
(``"empty": true`` and a sentence) instead of printing zeros.
"""

from __future__ import annotations

import json
import math
import posixpath
from collections import Counter
from typing import Any

import fsspec
import numpy as np

from relshard.builders import baselines as bl
from relshard.builders.metrics import bootstrap_ci, gold_bindings, metrics_of, sample_terms
from relshard.builders.scan import BenchmarkError, SampleReader, load_npy, read_index
from relshard.shards.layout import OutputLayout
from relshard.shards.manifest import read_manifest

BENCH_NAME = "benchmark.json"
REPLICATES = 1000


def load_benchmark(bench: str) -> dict[str, Any]:
    """``BENCH/benchmark.json``."""
    fs, root = fsspec.core.url_to_fs(bench)
    path = posixpath.join(root, BENCH_NAME)
    if not fs.exists(path):
        raise BenchmarkError(f"{bench} holds no benchmark.json; build one with "
                             "`relshard build-benchmark`.")
    with fs.open(path, "rb") as f:
        info: dict[str, Any] = json.load(f)
    return info


def _split_root(bench: str, info: dict[str, Any], split: str) -> str:
    if split not in info["splits"]:
        raise BenchmarkError(f"The benchmark has no split {split!r}; it has "
                             f"{sorted(info['splits'])}.")
    return posixpath.dirname(posixpath.join(bench, info["splits"][split]["manifest"]))


def _split_samples(bench: str, split: str, suffixes: tuple[str, ...]
                   ) -> list[tuple[str, dict[str, bytes]]]:
    info = load_benchmark(bench)
    layout = OutputLayout.open(_split_root(bench, info, split))
    index = read_index(layout, read_manifest(layout))
    out = []
    with SampleReader(layout) as reader:
        for row in index:
            members = reader.read(row)
            out.append((row["key"], {s: members[s] for s in suffixes if s in members}))
    return out


def split_records(bench: str, split: str) -> dict[str, dict[str, Any]]:
    """The ``KEY.json`` records of one split of a benchmark, by key."""
    records: dict[str, dict[str, Any]] = {}
    for key, members in _split_samples(bench, split, ("json",)):
        try:
            records[key] = json.loads(members["json"])
        except (KeyError, ValueError):
            continue
    return records


def split_windows(bench: str, split: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """The event windows ``(times, types)`` of one split, each sorted by time."""
    out = []
    for _, members in _split_samples(bench, split, ("times.npy", "types.npy")):
        t, k = load_npy(members.get("times.npy")), load_npy(members.get("types.npy"))
        if t is None or k is None or len(t) != len(k) or len(t) < 2:
            continue
        order = np.argsort(t, kind="stable")
        out.append((t[order].astype(np.float64), k[order].astype(np.int64)))
    return out


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


def _checkpoint_task(path: str) -> str:
    from relshard.training.trainer import load_checkpoint

    return str(load_checkpoint(path)["config"].get("task", "binding"))


def _empty(split: str, info: dict[str, Any]) -> dict[str, Any]:
    return {"split": split, "samples": 0, "empty": True,
            "message": f"The {split} split is empty, so there is nothing to score; rebuild "
                       f"the benchmark with more data or other shares (it has "
                       f"{info['grouping']['groups'] if 'grouping' in info else '?'} groups)."}


def evaluate_benchmark(bench: str, predictions: str, split: str = "test", *,
                       replicates: int = REPLICATES, seed: int = 0) -> dict[str, Any]:
    """Metrics of ``predictions`` (a ``.pt`` checkpoint, a JSONL path, ``gold`` or
    ``baselines``) and of the baselines, on ``split``."""
    info = load_benchmark(bench)
    _split_root(bench, info, split)
    if info["splits"][split]["samples"] == 0:
        return _empty(split, info)
    is_events = predictions.endswith(".pt") and _checkpoint_task(predictions) == "hawkes"
    modalities = info["splits"][split].get("modalities", {})
    if predictions == "baselines" and modalities and set(modalities) == {"events"}:
        is_events = True
    if is_events:
        return evaluate_events_split(bench, info, predictions, split, replicates, seed)
    return evaluate_binding_split(bench, info, predictions, split, replicates, seed)


# ---- binding ------------------------------------------------------------------------------


def _train_majority(info: dict[str, Any], bench: str) -> tuple[str, str]:
    """The training split's most common predicate and most often bound subject id."""
    train = info["splits"].get("train", {})
    predicates: dict[str, int] = train.get("predicates") or {}
    predicate = max(predicates, key=predicates.__getitem__) if predicates else "has"
    subjects: Counter[str] = Counter()
    if train.get("samples"):
        for rec in split_records(bench, "train").values():
            subjects.update(gold_bindings(rec).values())
    return predicate, (subjects.most_common(1)[0][0] if subjects else "S1")


def _system(records: dict[str, dict[str, Any]], preds: dict[str, dict[str, Any]],
            strata_of: dict[str, str], replicates: int, seed: int) -> dict[str, Any]:
    keys = list(records)
    terms = [sample_terms(records[k], preds.get(k, {})) for k in keys]
    names = list(sample_terms({}, {}))
    arr = {n: np.array([t[n] for t in terms], dtype=np.float64) for n in names}
    out = metrics_of({n: float(arr[n].sum()) for n in names})
    out["predicted"] = sum(k in preds for k in keys)
    out["binding_accuracy_ci"] = bootstrap_ci(arr["bind_ok"], arr["bind_n"], replicates, seed)
    strata: dict[str, Any] = {}
    for s in sorted(set(strata_of.values())):
        mask = np.array([strata_of[k] == s for k in keys])
        ok, n = arr["bind_ok"][mask], arr["bind_n"][mask]
        strata[s] = {"samples": int(mask.sum()), "bindings": int(n.sum()),
                     "binding_accuracy": float(ok.sum() / n.sum()) if n.sum() else None,
                     "binding_accuracy_ci": bootstrap_ci(ok, n, replicates, seed)}
    out["strata"] = strata
    return out


def evaluate_binding_split(bench: str, info: dict[str, Any], predictions: str, split: str,
                           replicates: int = REPLICATES, seed: int = 0) -> dict[str, Any]:
    """Binding metrics of the predictions and the binding baselines on one split."""
    records = split_records(bench, split)
    predicate, subject = _train_majority(info, bench)
    systems: dict[str, dict[str, dict[str, Any]]] = {}
    if predictions == "gold":
        systems["gold"] = records
    elif predictions.endswith(".pt"):
        from relshard.training.predict import predict_with_checkpoint

        systems["model"] = predict_with_checkpoint(predictions, records)
    elif predictions != "baselines":
        systems["model"] = load_predictions(predictions)
    systems["containment"] = bl.containment_predictions(records, predicate)
    systems["majority"] = bl.majority_predictions(records, predicate, subject)
    cap = int(info.get("max_subjects", 3))
    strata_of = {k: str(min(len(r.get("subjects", [])), cap)) for k, r in records.items()}
    scored = {name: _system(records, preds, strata_of, replicates, seed)
              for name, preds in systems.items()}
    main = next(iter(scored.values()))
    result: dict[str, Any] = {
        "task": "binding", "split": split, "samples": len(records),
        "predicted": main["predicted"],
        **{k: main[k] for k in ("binding_accuracy", "bindings", "relations", "relation_pairs",
                                "placeholder_validity", "captions")},
        "systems": scored,
        "baselines": {"containment": "attribute to the subject whose box contains its centre "
                                     "(else the nearest subject), predicate "
                                     f"{predicate!r}",
                      "majority": f"every attribute to {subject}, predicate {predicate!r}"},
        "bootstrap": {"replicates": replicates, "seed": seed, "level": 0.95,
                      "unit": "sample"},
    }
    if result["binding_accuracy"] is None:
        result["note"] = f"The {split} split has no bound attributes to score."
    return result


# ---- events -------------------------------------------------------------------------------


def _event_system(terms: dict[str, list[float]], replicates: int, seed: int,
                  log_scale: float) -> dict[str, Any]:
    ll, n = np.array(terms["ll"]), np.array(terms["events"], dtype=np.float64)
    correct, terr = np.array(terms["correct"], dtype=np.float64), np.array(terms["time_err"])
    total = float(n.sum())
    if total <= 0:
        return {"events": 0, "nll_per_event": None, "type_accuracy": None,
                "log1p_time_rmse": None}
    nll_ci = bootstrap_ci(-ll, n, replicates, seed)
    has_time = bool(np.isfinite(terr).all())
    return {
        "events": int(total), "windows": len(ll),
        "nll_per_event": float(-ll.sum() / total) - log_scale,
        "nll_per_event_ci": [v - log_scale for v in nll_ci] if nll_ci else None,
        "type_accuracy": float(correct.sum() / total),
        "type_accuracy_ci": bootstrap_ci(correct, n, replicates, seed),
        "log1p_time_rmse": math.sqrt(float(terr.sum()) / total) if has_time else None,
    }


def evaluate_events_split(bench: str, info: dict[str, Any], predictions: str, split: str,
                          replicates: int = REPLICATES, seed: int = 0) -> dict[str, Any]:
    """Next-event metrics of a Hawkes checkpoint and of the event baselines on one split.

    NLL per event is in the model's time unit (``hawkes.time_scale`` seconds; seconds
    without a model), so the model and the baselines are comparable.
    """
    windows = split_windows(bench, split)
    train = split_windows(bench, "train") if info["splits"].get("train", {}).get("samples") \
        else []
    scale, k_types = 1.0, None
    systems: dict[str, dict[str, Any]] = {}
    if predictions.endswith(".pt"):
        from relshard.training.predict import event_window_terms

        cfg, terms = event_window_terms(predictions, windows)
        scale = float(cfg["hawkes"]["time_scale"])
        k_types = int(cfg["hawkes"]["num_types"])
        systems["model"] = _event_system(terms, replicates, seed, 0.0)
    if k_types is None:
        k_types = 1 + max([int(u.max()) for _, u in windows + train if len(u)] + [0])
    clip = [(t, np.clip(u, 0, k_types - 1)) for t, u in windows]
    clip_train = [(t, np.clip(u, 0, k_types - 1)) for t, u in train]
    log_scale = math.log(scale)  # seconds -> the model's unit: log lambda grows by log(scale)
    notes = []
    if clip_train:
        rates = bl.poisson_rates(clip_train, k_types)
        terms = _collect(bl.poisson_terms(w, rates) for w in clip)
        systems["poisson"] = _event_system(terms, replicates, seed, log_scale)
        try:
            mu, alpha, beta = bl.fit_whole_log(clip_train, k_types)
            terms = _collect(bl.hawkes_terms(w, mu, alpha, beta) for w in clip)
            systems["hawkes"] = _event_system(terms, replicates, seed, log_scale)
        except (ValueError, FloatingPointError) as exc:
            notes.append(f"The whole-log Hawkes baseline could not be fitted ({exc}).")
    else:
        notes.append("The benchmark has no training windows, so the baselines are not fitted.")
    main = next(iter(systems.values()), {})
    result = {"task": "events", "split": split, "samples": info["splits"][split]["samples"],
              "events": main.get("events", 0), "type_accuracy": main.get("type_accuracy"),
              "nll_per_event": main.get("nll_per_event"),
              "log1p_time_rmse": main.get("log1p_time_rmse"), "systems": systems,
              "time_unit_s": scale,
              "baselines": {"poisson": "homogeneous Poisson process per type, rates from "
                                       "the train split",
                            "hawkes": "one exponential Hawkes process fitted to the whole "
                                      "train split"},
              "bootstrap": {"replicates": replicates, "seed": seed, "level": 0.95,
                            "unit": "window"}}
    if notes:
        result["notes"] = notes
    return result


def _collect(rows: Any) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"ll": [], "events": [], "correct": [], "time_err": []}
    for row in rows:
        if row["events"]:
            for name in out:
                out[name].append(row[name])
    return out
