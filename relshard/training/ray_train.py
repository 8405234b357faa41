"""The Ray path: shards through ``ray.data.read_webdataset``, training through Ray Train.

:func:`read_shards` loads a manifest's shards as a Ray Dataset with a safe
decoder (only ``KEY.json`` is kept, parsed and re-serialized as text, never
unpickled; Ray's default decoder would unpickle ``.pyd`` members).
:func:`train_ray` runs the same binding model and loss as :func:`train` in a
``TorchTrainer`` (DDP over gloo on CPU workers, NCCL with ``use_gpu``), each
worker streaming its split of the dataset with ``get_dataset_shard``. A
checkpoint (model, optimizer, epoch, step) is reported at the end of every
epoch and copied to ``CHECKPOINT_DIR/ray/``; the next ``relshard train --ray``
with the same config resumes from it at the next epoch (the folder must be
shared storage on a multi-node cluster). (Mid-epoch exact
resume is the :class:`ShardLoader` path: Ray Data iterators do not save their
position.)
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from relshard.training.catalog import Catalog
from relshard.training.decoding import CorruptSample, decode_member
from relshard.training.trainer import TrainConfig, TrainResult

STATE = "state.pt"


def safe_json_decoder(sample: dict[str, Any]) -> dict[str, Any]:
    """A ``read_webdataset`` decoder: the key and the record as JSON text, nothing unpickled."""
    raw = sample.get("json")
    try:
        record = decode_member("json", raw) if isinstance(raw, bytes) else None
    except CorruptSample:
        record = None
    return {"__key__": sample.get("__key__", ""),
            "record": json.dumps(record) if isinstance(record, dict) else ""}


def read_shards(manifest: str) -> Any:
    """The manifest's shards as a Ray Dataset of ``{"__key__", "record"}`` rows."""
    import ray.data

    catalog = Catalog.open(manifest)
    ds = ray.data.read_webdataset(list(catalog.urls), decoder=safe_json_decoder,
                                  suffixes=["json"])
    return ds.filter(expr="record != ''")


def _loop(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    from relshard.training.models.binding import BindingModel
    from relshard.training.models.features import BindingCollate
    from relshard.training.trainer import _ddp_loss

    cfg = TrainConfig.model_validate(config["cfg"])
    torch.manual_seed(cfg.seed)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    model = BindingModel(cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    epoch, step = 0, 0
    checkpoint = ray.train.get_checkpoint()  # set when Ray restores this run after a failure
    state = None
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / STATE, map_location="cpu", weights_only=True)
    elif config.get("resume"):
        state = torch.load(config["resume"], map_location="cpu", weights_only=True)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        epoch, step = int(state["epoch"]) + 1, int(state["step"])
    net = ray.train.torch.prepare_model(model)
    collate = BindingCollate(cfg.model.buckets, cfg.model.max_ngrams)
    shard = ray.train.get_dataset_shard("train")
    for ep in range(epoch, cfg.epochs):
        losses = []
        for rows in shard.iter_batches(batch_size=cfg.batch_size, batch_format="numpy",
                                       local_shuffle_buffer_size=4 * cfg.batch_size,
                                       local_shuffle_seed=cfg.seed + ep):
            batch = collate([{"json": json.loads(r)} for r in rows["record"]])
            loss, _ = _ddp_loss(net, model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            losses.append(float(loss.detach()))
        metrics = {"epoch": ep, "step": step, "loss": sum(losses) / max(len(losses), 1),
                   "losses": json.dumps(losses)}
        with tempfile.TemporaryDirectory() as tmp:
            if ray.train.get_context().get_world_rank() == 0:
                torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                            "epoch": ep, "step": step, "config": cfg.model_dump()},
                           Path(tmp) / STATE)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
            else:
                ray.train.report(metrics)


def train_ray(cfg: TrainConfig, num_workers: int = 1, use_gpu: bool = False) -> TrainResult:
    """Train through Ray Train's TorchTrainer (Ray must be connected); resume by epoch."""
    import ray.train
    from ray.train.torch import TorchTrainer

    ckpt_dir = Path(cfg.checkpoint_dir).resolve() / "ray"
    resume = str(ckpt_dir / STATE) if (ckpt_dir / STATE).exists() else None
    start = int(torch.load(resume, weights_only=True)["step"]) if resume else 0
    storage = Path(cfg.checkpoint_dir).resolve() / "ray_runs"
    trainer = TorchTrainer(
        _loop, train_loop_config={"cfg": cfg.model_dump(), "resume": resume},
        scaling_config=ray.train.ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
        run_config=ray.train.RunConfig(storage_path=str(storage), name="binding"),
        datasets={"train": read_shards(cfg.data)},
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
