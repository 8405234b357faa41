"""One rank of the 2-process gloo test (run in a spawned process)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist


def run_rank(rank: int, world: int, manifest: str, rendezvous: str, out: str) -> None:
    """Read part of an epoch, save the state, resume in a new loader; write what was read."""
    from relshard import ShardLoader, ShardStream

    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=60))
    try:
        def loader() -> ShardLoader:
            stream = ShardStream(manifest, batch_size=3, shuffle=True, seed=4, image="bytes")
            assert (stream.rank, stream.world_size) == (rank, world)
            stream.set_epoch(1)
            # fork, as under torchrun (a spawned process would spawn its workers too)
            return ShardLoader(stream, num_workers=2, multiprocessing_context="fork")

        def step(batch: dict) -> None:  # a collective per batch: uneven ranks would hang here
            t = torch.tensor([len(batch["__index__"])])
            dist.all_reduce(t)

        first, taken = loader(), []
        for batch in first:
            step(batch)
            taken.append(batch["__index__"])
            if len(taken) == 2:
                break
        state = json.loads(json.dumps(first.state_dict()))  # as a checkpoint would store it
        resumed = loader()
        resumed.load_state_dict(state)
        rest = []
        for batch in resumed:
            step(batch)
            rest.append(batch["__index__"])
        Path(out).write_text(json.dumps({"taken": taken, "rest": rest, "state": state}))
    finally:
        dist.destroy_process_group()
