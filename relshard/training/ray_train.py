"""The Ray path: shards through ``ray.data.read_webdataset``, training through Ray Train.

:func:`read_shards` loads a manifest's shards as a Ray Dataset with a safe
decoder: ``KEY.json`` is parsed and re-serialized as text, ``KEY.times.npy`` /
``KEY.types.npy`` are checked to load without pickle and kept as bytes; nothing
is unpickled (Ray's default decoder would unpickle ``.pyd`` members).

:func:`train_ray` runs the same task as :func:`relshard.training.trainer.train`
(``task: binding`` or ``hawkes``: the same model, collate and loss) in a
``TorchTrainer`` (DDP over gloo on CPU workers, NCCL with ``use_gpu``), each
worker streaming an equal share of the dataset with ``get_dataset_shard``. It
honours ``max_steps`` (all workers stop at the same step) and ``epochs``.

Checkpoints have the local trainer's format (``model``, ``optimizer``, ``step``,
``config``, ``predicates``; plus ``epoch`` and ``epoch_done`` instead of the
loader position), so ``relshard evaluate`` reads either. One is reported at the
end of every epoch and when ``max_steps`` stops the run, and copied to
``CHECKPOINT_DIR/ray/latest.pt``; the next ``relshard train --ray`` with the same
config resumes from it: at the next epoch, or, after a stop mid-epoch, at the
start of that epoch again (Ray Data iterators do not save their position; exact
mid-epoch resume is the :class:`ShardLoader` path). The folder must be shared
storage on a multi-node cluster.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from relshard.shards.decoding import decode_member
from relshard.shards.tarread import CorruptSample
from relshard.training.catalog import Catalog
from relshard.training.trainer import CHECKPOINT, TrainConfig, TrainResult

STATE = CHECKPOINT
OLD_STATE = "state.pt"  # the name before the checkpoint format was shared with the local trainer
EVENT_SUFFIXES = ("times.npy", "types.npy")


def _npy_ok(raw: Any) -> bytes:
    if not isinstance(raw, bytes):
        return b""
    try:
        np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError):
        return b""
    return raw


def safe_json_decoder(sample: dict[str, Any]) -> dict[str, Any]:
    """A ``read_webdataset`` decoder: the key and the record as JSON text, nothing unpickled."""
    raw = sample.get("json")
    try:
        record = decode_member("json", raw) if isinstance(raw, bytes) else None
    except CorruptSample:
        record = None
    return {"__key__": sample.get("__key__", ""),
            "record": json.dumps(record) if isinstance(record, dict) else ""}


def safe_event_decoder(sample: dict[str, Any]) -> dict[str, Any]:
    """A ``read_webdataset`` decoder for event windows: npy bytes that load without pickle."""
    return {"__key__": sample.get("__key__", ""), "times": _npy_ok(sample.get("times.npy")),
            "types": _npy_ok(sample.get("types.npy"))}


def read_shards(manifest: str, task: str = "binding") -> Any:
    """The manifest's shards as a Ray Dataset: ``{"__key__", "record"}`` rows for binding,
    ``{"__key__", "times", "types"}`` (npy bytes) for hawkes."""
    import ray.data

    catalog = Catalog.open(manifest)
    if task == "hawkes":
        ds = ray.data.read_webdataset(list(catalog.urls), decoder=safe_event_decoder,
                                      suffixes=list(EVENT_SUFFIXES))
        return ds.filter(lambda r: len(r["times"]) > 0 and len(r["types"]) > 0)
    ds = ray.data.read_webdataset(list(catalog.urls), decoder=safe_json_decoder,
                                  suffixes=["json"])
    return ds.filter(expr="record != ''")


def _samples(task: str, rows: dict[str, Any]) -> list[dict[str, Any]]:
    if task == "hawkes":
        return [{"times.npy": np.load(io.BytesIO(bytes(t)), allow_pickle=False),
                 "types.npy": np.load(io.BytesIO(bytes(k)), allow_pickle=False)}
                for t, k in zip(rows["times"], rows["types"], strict=True)]
    return [{"json": json.loads(r)} for r in rows["record"]]


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_device(v, device) for v in value]
    return value


def _all_predicates(predicates: Counter[str]) -> dict[str, int]:
    """The predicate counts of every worker (each saw its own share of the data)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return dict(predicates)
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, dict(predicates))
    total: Counter[str] = Counter()
    for part in parts:
        total.update(part or {})
    return dict(total)


def _load_state(config: dict[str, Any]) -> dict[str, Any] | None:
    import ray.train

    checkpoint = ray.train.get_checkpoint()  # set when Ray restores this run after a failure
    state: dict[str, Any] | None = None
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / STATE, map_location="cpu", weights_only=True)
    elif config.get("resume"):
        state = torch.load(config["resume"], map_location="cpu", weights_only=True)
    return state


def _loop(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    from relshard.training.models.features import BindingCollate
    from relshard.training.models.hawkes_model import EventCollate
    from relshard.training.trainer import make_model, task_loss

    cfg = TrainConfig.model_validate(config["cfg"])
    torch.manual_seed(cfg.seed)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    model = make_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    epoch, step = 0, 0
    predicates: Counter[str] = Counter()
    state = _load_state(config)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        epoch = int(state["epoch"]) + (1 if state.get("epoch_done", True) else 0)
        if ray.train.get_context().get_world_rank() == 0:
            predicates.update(state.get("predicates", {}))
    device = ray.train.torch.get_device()
    net = ray.train.torch.prepare_model(model)
    collate: EventCollate | BindingCollate = (
        EventCollate(cfg.hawkes) if cfg.task == "hawkes"
        else BindingCollate(cfg.model.buckets, cfg.model.max_ngrams))
    shard = ray.train.get_dataset_shard("train")
    rank = ray.train.get_context().get_world_rank()

    def report(ep: int, done: bool, losses: list[float]) -> None:
        metrics = {"epoch": ep, "step": step, "loss": sum(losses) / max(len(losses), 1),
                   "losses": json.dumps(losses)}
        counts = _all_predicates(predicates)
        with tempfile.TemporaryDirectory() as tmp:
            if rank == 0:
                torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                            "step": step, "epoch": ep, "epoch_done": done,
                            "config": cfg.model_dump(), "predicates": counts,
                            "trainer": "ray"}, Path(tmp) / STATE)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
            else:
                ray.train.report(metrics)

    if cfg.max_steps is not None and step >= cfg.max_steps:
        return
    for ep in range(epoch, cfg.epochs):
        losses: list[float] = []
        for rows in shard.iter_batches(batch_size=cfg.batch_size, batch_format="numpy",
                                       local_shuffle_buffer_size=4 * cfg.batch_size,
                                       local_shuffle_seed=cfg.seed + ep):
            batch = collate(_samples(cfg.task, rows))
            for rec in batch.get("records", []):
                predicates.update(r["predicate"] for r in rec.get("relations", []))
            loss, _ = task_loss(net, model, _to_device(batch, device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            losses.append(float(loss.detach()))
            if cfg.max_steps is not None and step >= cfg.max_steps:
                report(ep, False, losses)
                return
        report(ep, True, losses)


def train_ray(cfg: TrainConfig, num_workers: int = 1, use_gpu: bool = False,
              cpus_per_worker: float | None = None) -> TrainResult:
    """Train through Ray Train's TorchTrainer (Ray must be connected); resume by epoch.

    ``cpus_per_worker`` (default 1) is what each training worker reserves; leave CPUs
    free for Ray Data's read tasks, or the dataset never streams (e.g. 2 workers on a
    2-CPU machine need 0.5 each).
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    ckpt_dir = Path(cfg.checkpoint_dir).resolve() / "ray"
    resume = next((str(ckpt_dir / n) for n in (STATE, OLD_STATE) if (ckpt_dir / n).exists()),
                  None)
    start = int(torch.load(resume, weights_only=True)["step"]) if resume else 0
    storage = Path(cfg.checkpoint_dir).resolve() / "ray_runs"
    trainer = TorchTrainer(
        _loop, train_loop_config={"cfg": cfg.model_dump(), "resume": resume},
        scaling_config=ray.train.ScalingConfig(
            num_workers=num_workers, use_gpu=use_gpu,
            resources_per_worker={"CPU": cpus_per_worker} if cpus_per_worker else None),
        run_config=ray.train.RunConfig(storage_path=str(storage), name=cfg.task),
        datasets={"train": read_shards(cfg.data, cfg.task)},
    )
    result = trainer.fit()
    losses: list[float] = []
    step = start
    if result.metrics:
        step = int(result.metrics.get("step", start))
    if result.checkpoint is not None:
        with result.checkpoint.as_directory() as d:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(d) / STATE, ckpt_dir / f".{STATE}.tmp")
            (ckpt_dir / f".{STATE}.tmp").replace(ckpt_dir / STATE)
    for metrics in (result.metrics_dataframe.to_dict("records")
                    if result.metrics_dataframe is not None else []):
        losses.extend(json.loads(metrics.get("losses", "[]")))
    return TrainResult(step=step, start_step=start, losses=losses, checkpoint=str(ckpt_dir / STATE))
