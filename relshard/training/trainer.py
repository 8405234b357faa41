"""``relshard train CONFIG``: train a relational model from streamed shards, resumably.

``task: binding`` (the default) trains the subject–attribute binding model on
``KEY.json`` records; ``task: hawkes`` trains the self-attentive Hawkes process
on event windows (``KEY.times.npy`` / ``KEY.types.npy``).

The config (YAML, validated by :class:`TrainConfig`) names the training shards
(a run's output or a benchmark split), the checkpoint folder and the model.
Batches come from a :class:`ShardStream` through a :class:`ShardLoader`, so a
checkpoint holds, next to the model and optimizer, the loader's exact position:
``CHECKPOINT_DIR/latest.pt`` is written every ``checkpoint_every`` steps and at
the end (atomically), and a second ``relshard train`` with the same config
continues from the saved step with the batches not yet seen. Checkpoints load
with ``torch.load(weights_only=True)``: tensors and plain values, no pickle of
arbitrary objects. Under ``torch.distributed`` the model is wrapped in DDP, each
rank reads its own share of every epoch, and rank 0 writes the checkpoints.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from relshard.errors import RelshardError
from relshard.shards.members import describe_validation_error
from relshard.training.loader import ShardLoader
from relshard.training.models.binding import BindingConfig, BindingModel
from relshard.training.models.features import BindingCollate
from relshard.training.models.hawkes_model import EventCollate, HawkesConfig, HawkesModel
from relshard.training.stream import ShardStream

log = logging.getLogger(__name__)
CHECKPOINT = "latest.pt"


class TrainConfigError(RelshardError):
    """A training config is invalid."""


class TrainConfig(BaseModel):
    """What ``relshard train`` reads from its YAML config."""

    model_config = ConfigDict(extra="forbid")

    task: Literal["binding", "hawkes"] = "binding"
    data: str
    checkpoint_dir: str
    batch_size: int = 32
    epochs: int = 1
    max_steps: int | None = None
    lr: float = 3e-3
    weight_decay: float = 0.01
    seed: int = 0
    num_workers: int = 0
    shuffle_window: int | None = None
    checkpoint_every: int = 50
    log_every: int = 10
    torch_threads: int | None = None  # intra-op threads (1 suits small models on busy CPUs)
    model: BindingConfig = BindingConfig()  # task "binding"
    hawkes: HawkesConfig = HawkesConfig()  # task "hawkes"


def load_train_config(path: str | Path) -> TrainConfig:
    """Read and validate a training config; raises :class:`TrainConfigError`."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        return TrainConfig.model_validate(data)
    except FileNotFoundError:
        raise TrainConfigError(f"No training config at {path}.") from None
    except yaml.YAMLError as exc:
        raise TrainConfigError(f"The training config {path} is not valid YAML: {exc}.") from None
    except ValidationError as exc:
        raise TrainConfigError(
            f"The training config {path} is invalid: {describe_validation_error(exc)}.") from None


@dataclass
class TrainResult:
    """What a training run did: its steps, losses and where it started."""

    step: int
    start_step: int
    losses: list[float] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)
    checkpoint: str = ""


def _rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` to a temporary name, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint of :func:`train`, loaded without unpickling arbitrary objects."""
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
        return state
    except FileNotFoundError:
        raise RelshardError(f"No checkpoint at {path}.") from None


def make_loader(cfg: TrainConfig, shuffle: bool = True, **stream_args: Any) -> ShardLoader:
    """The task's loader: shuffled batches of ``cfg.data``, collated for the model."""
    if cfg.task == "hawkes":
        collate: EventCollate | BindingCollate = EventCollate(cfg.hawkes)
        members = ["times.npy", "types.npy"]
    else:
        collate = BindingCollate(cfg.model.buckets, cfg.model.max_ngrams)
        members = ["json"]
    stream = ShardStream(cfg.data, cfg.batch_size, shuffle=shuffle, seed=cfg.seed,
                         shuffle_window=cfg.shuffle_window, members=members,
                         collate_fn=collate, **stream_args)
    return ShardLoader(stream, num_workers=cfg.num_workers)


def make_model(cfg: TrainConfig) -> BindingModel | HawkesModel:
    """The task's model."""
    return HawkesModel(cfg.hawkes) if cfg.task == "hawkes" else BindingModel(cfg.model)


def task_loss(net: torch.nn.Module, model: BindingModel | HawkesModel, batch: dict[str, Any]
              ) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss through ``net`` (the model or its DDP wrapper) and the batch's metrics."""
    if isinstance(model, HawkesModel):
        return model.objective(net(batch), batch)
    return _ddp_loss(net, model, batch)


def train(cfg: TrainConfig, loader: ShardLoader | None = None) -> TrainResult:
    """Train (or continue training) the binding model; return the steps and losses."""
    torch.manual_seed(cfg.seed)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    loader = loader or make_loader(cfg)
    model = make_model(cfg)
    net: torch.nn.Module = model
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        net = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    path = Path(cfg.checkpoint_dir) / CHECKPOINT
    step = 0
    predicates: Counter[str] = Counter()
    if path.exists():
        state = load_checkpoint(path)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        loader.load_state_dict(state["loader"])
        step = int(state["step"])
        predicates.update(state.get("predicates", {}))
        log.info("resuming from step %d (epoch %d)", step, loader.epoch)
    result = TrainResult(step=step, start_step=step, checkpoint=str(path))

    def checkpoint() -> None:
        if _rank() == 0:
            save_checkpoint(path, {
                "model": model.state_dict(), "optimizer": opt.state_dict(),
                "loader": loader.state_dict(), "step": step, "config": cfg.model_dump(),
                "predicates": dict(predicates),
            })

    net.train()
    for epoch in range(loader.epoch, cfg.epochs):
        loader.set_epoch(epoch)
        for batch in loader:
            for rec in batch.get("records", []):
                predicates.update(r["predicate"] for r in rec.get("relations", []))
            loss, info = task_loss(net, model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            result.losses.append(float(loss.detach()))
            result.accuracies.append(info["acc"])
            if step % cfg.log_every == 0 and _rank() == 0:
                log.info("step %d epoch %d loss %.4f acc %.3f", step, epoch,
                         result.losses[-1], info["acc"])
            if step % cfg.checkpoint_every == 0:
                checkpoint()
            if cfg.max_steps is not None and step >= cfg.max_steps:
                result.step = step
                checkpoint()
                return result
    result.step = step
    checkpoint()
    return result


def _ddp_loss(net: torch.nn.Module, model: BindingModel, batch: dict[str, Any]
              ) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss through the DDP wrapper, so gradients are averaged across ranks."""
    logits = net(batch)
    target = batch["target"]
    valid = target >= 0
    if not valid.any():
        return logits.masked_fill(torch.isinf(logits), 0).sum() * 0.0, {"n": 0.0, "acc": 0.0}
    picked = logits[valid]
    acc = (picked.argmax(-1) == target[valid]).float().mean().item()
    return torch.nn.functional.cross_entropy(picked, target[valid]), {"acc": acc,
                                                                        "n": float(valid.sum())}


def mean_loss(losses: list[float], n: int) -> float:
    """Mean of the first (``n > 0``) or last (``n < 0``) ``|n|`` losses."""
    part = losses[:n] if n > 0 else losses[n:]
    return sum(part) / len(part) if part else math.nan
