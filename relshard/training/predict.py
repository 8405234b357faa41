"""Predictions of a trained binding model, in the format ``relshard evaluate`` scores.

For each attribute of a record, the model's most likely subject becomes a
relation ``(subject, predicate, attribute)`` with the softmax probability as its
confidence; the predicate is the one seen most often in training (kept in the
checkpoint). The relational caption is built from those relations with
placeholders only (``{S1} wears {A1}; ...``).
"""

from __future__ import annotations

from typing import Any

import torch

from relshard.errors import RelshardError
from relshard.training.models.binding import BindingConfig, BindingModel
from relshard.training.models.features import BindingCollate
from relshard.training.trainer import load_checkpoint


def load_model(checkpoint: str) -> tuple[BindingModel, dict[str, Any]]:
    """The binding model of a checkpoint, in eval mode, and the checkpoint itself."""
    state = load_checkpoint(checkpoint)
    if state["config"].get("task", "binding") != "binding":
        raise RelshardError(f"{checkpoint} is a {state['config']['task']} checkpoint, "
                            "not a binding model.")
    cfg = BindingConfig.model_validate(state["config"]["model"])
    model = BindingModel(cfg)
    model.load_state_dict(state["model"])
    model.eval()
    return model, state


@torch.no_grad()
def predict_records(
    model: BindingModel, records: list[dict[str, Any]], predicate: str = "has",
    batch_size: int = 64,
) -> dict[str, dict[str, Any]]:
    """Predicted relations and relational caption of each record, by key."""
    collate = BindingCollate(model.cfg.buckets, model.cfg.max_ngrams)
    out: dict[str, dict[str, Any]] = {}
    for lo in range(0, len(records), batch_size):
        chunk = records[lo:lo + batch_size]
        batch = collate([{"json": r} for r in chunk])
        probs = model(batch).softmax(-1)
        for b, rec in enumerate(chunk):
            subjects = rec.get("subjects", [])
            relations = []
            for j, attr in enumerate(rec.get("attributes", [])):
                if not subjects:
                    break
                p, s = probs[b, j].max(-1)
                relations.append({"subject": subjects[int(s)]["id"], "predicate": predicate,
                                  "object": attr["id"], "confidence": round(float(p), 4)})
            caption = "; ".join(f"{{{r['subject']}}} {r['predicate']} {{{r['object']}}}"
                                for r in relations)
            out[str(rec.get("key"))] = {"relations": relations,
                                        "relational_caption": caption + "." if caption else ""}
    return out


def predict_with_checkpoint(checkpoint: str, records: dict[str, dict[str, Any]]
                            ) -> dict[str, dict[str, Any]]:
    """Predictions of the checkpoint's model for ``records`` (by key)."""
    model, state = load_model(checkpoint)
    predicates: dict[str, int] = state.get("predicates") or {}
    predicate = max(predicates, key=predicates.__getitem__) if predicates else "has"
    return predict_records(model, list(records.values()), predicate)


@torch.no_grad()
def evaluate_events(checkpoint: str, manifest: str, batch_size: int = 64) -> dict[str, Any]:
    """Next-type accuracy, NLL per event and next-time error of a Hawkes checkpoint."""
    from relshard.training.trainer import TrainConfig, make_loader, make_model

    state = load_checkpoint(checkpoint)
    cfg = TrainConfig.model_validate({**state["config"], "data": manifest,
                                      "batch_size": batch_size, "num_workers": 0})
    if cfg.task != "hawkes":
        raise RelshardError(f"{checkpoint} is a {cfg.task} checkpoint, not a Hawkes model.")
    model = make_model(cfg)
    model.load_state_dict(state["model"])
    model.eval()
    loader = make_loader(cfg, shuffle=False, remainder="pad")
    ll = events = correct = time_err = 0.0
    for batch in loader:  # "pad" keeps every window; EventCollate drops the repeats
        out = model(batch)
        ll += float(out["ll"])
        events += float(out["events"])
        correct += float(out["correct"])
        time_err += float(out["time_err"])
    n = max(events, 1.0)
    return {"events": int(events), "type_accuracy": correct / n, "nll_per_event": -ll / n,
            "log1p_time_rmse": (time_err / n) ** 0.5}


@torch.no_grad()
def event_window_terms(checkpoint: str, windows: list[tuple[Any, Any]], batch_size: int = 64
                       ) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Per window (with at least 2 events): ``ll``, ``events``, ``correct``, ``time_err``.

    ``windows`` are ``(times, types)`` numpy arrays; returns the checkpoint's config and
    the terms (in the model's time unit, ``hawkes.time_scale`` seconds).
    """
    from relshard.training.models.hawkes_model import EventCollate, HawkesModel
    from relshard.training.trainer import TrainConfig

    state = load_checkpoint(checkpoint)
    cfg = TrainConfig.model_validate({**state["config"], "data": "-"})
    if cfg.task != "hawkes":
        raise RelshardError(f"{checkpoint} is a {cfg.task} checkpoint, not a Hawkes model.")
    model = HawkesModel(cfg.hawkes)  # what make_model(cfg) makes for the hawkes task
    model.load_state_dict(state["model"])
    model.eval()
    collate = EventCollate(cfg.hawkes)
    out: dict[str, list[float]] = {"ll": [], "events": [], "correct": [], "time_err": []}
    for lo in range(0, len(windows), batch_size):
        batch = collate([{"times.npy": t, "types.npy": k} for t, k in windows[lo:lo + batch_size]])
        for bucket in batch["buckets"]:
            for name, value in model.bucket_rows(bucket).items():
                out[name].extend(float(v) for v in value)
    return state["config"], out
