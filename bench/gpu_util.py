"""GPU utilization while the binding model trains from ShardStream with DataLoader workers.

Builds relational shards (or uses ``--data``, a run or benchmark split), then
trains the binding model on ``cuda`` for ``--seconds`` with
``ShardLoader(num_workers=--workers)`` while a thread samples
``nvidia-smi --query-gpu=utilization.gpu`` every 0.2 s. Prints steps/s,
samples/s, the mean and median GPU utilization, and the share of time the
training loop waited for data (the loader's share). Without CUDA it trains on
the CPU and says so (useful only to check the script).

    python bench/gpu_util.py [--workers 8] [--seconds 60] [--batch 256] [--dim 256]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.unit.training.shardgen import make_relational_output  # noqa: E402


def sample_gpu(stop: threading.Event, out: list[float]) -> None:
    while not stop.is_set():
        try:
            text = subprocess.run(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=5, check=True).stdout
            out.append(float(text.split()[0]))
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return
        stop.wait(0.2)


def main() -> None:
    from relshard.training.models.binding import BindingConfig, BindingModel
    from relshard.training.trainer import TrainConfig, make_loader

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="a run or benchmark split (default: synthetic shards)")
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=60)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            rows = [(f"img{i}.jpg", f"h{i}", 1 + i % 4) for i in range(args.samples)]
            data = str(make_relational_output(Path(tmp) / "run", rows, per_shard=1000).parent)
        cfg = TrainConfig(data=data, checkpoint_dir=str(Path(tmp) / "ck"), batch_size=args.batch,
                          epochs=1000, num_workers=args.workers,
                          model=BindingConfig(dim=args.dim, layers=args.layers, heads=8))
        loader = make_loader(cfg)
        model = BindingModel(cfg.model).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        util: list[float] = []
        stop = threading.Event()
        sampler = threading.Thread(target=sample_gpu, args=(stop, util), daemon=True)
        steps = samples = 0
        waited = 0.0
        start = time.perf_counter()
        if device == "cuda" and shutil.which("nvidia-smi"):
            sampler.start()
        epoch = 0
        while time.perf_counter() - start < args.seconds:
            loader.set_epoch(epoch)
            t_wait = time.perf_counter()
            for batch in loader:
                waited += time.perf_counter() - t_wait
                tensors = {k: v.to(device, non_blocking=True) for k, v in batch.items()
                           if isinstance(v, torch.Tensor)}
                loss, _ = model.loss(tensors)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
                samples += len(batch["keys"])
                if time.perf_counter() - start >= args.seconds:
                    break
                t_wait = time.perf_counter()
            epoch += 1
        if device == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        stop.set()
    print(f"device {device} ({torch.cuda.get_device_name() if device == 'cuda' else 'no CUDA'}),"
          f" {args.workers} workers, batch {args.batch}, dim {args.dim}, {args.layers} layers")
    print(f"{steps} steps in {elapsed:.1f} s: {steps / elapsed:.1f} steps/s, "
          f"{samples / elapsed:.0f} samples/s; waiting for data {waited / elapsed:.0%} of the time")
    if util:
        print(f"GPU utilization: mean {statistics.mean(util):.0f}%, "
              f"median {statistics.median(util):.0f}% over {len(util)} samples")
    else:
        print("GPU utilization: not measured (no CUDA device or no nvidia-smi)")


if __name__ == "__main__":
    main()
