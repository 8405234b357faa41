"""A real two-node Ray cluster on loopback: submit jobs, place by resource, lose a node.

The head is started with `ray start --head` on 127.0.0.1 with its own ports and temp
dir; a second node joins with a custom `decode` resource. Both are stopped by PID
(their process groups), never with `ray stop`, which would end every Ray of the user.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import SAMPLES
from tests.helpers.loopback_cluster import LoopbackCluster, kill_group, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[LoopbackCluster]:
    c = LoopbackCluster(tmp_path_factory.mktemp("rayc"))
    try:
        c.start()
        c.add_node(cpus=1, resources={"decode": 2})
        yield c
    finally:
        c.stop()


def _inputs(root: Path, n: int) -> Path:
    root.mkdir(parents=True)
    photos = sorted((SAMPLES / "images").glob("*.jpg"))
    for i in range(n):
        shutil.copy(photos[i % len(photos)], root / f"img{i:03d}.jpg")
    return root


def _spec(src: Path, out: Path, **decode) -> object:
    from relshard.spec import parse_spec

    return parse_spec({"name": "cluster", "sources": [{"path": str(src)}],
                       "decode": {"max_side": 384, "batch_size": 1, **decode},
                       "output": {"path": str(out), "shard_max_samples": 4},
                       "runtime": {"progress": False}})


def _ray_job_id(cluster: LoopbackCluster, submission: str) -> str:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(cluster.dashboard).get_job_info(submission).job_id


def _decode_nodes(cluster: LoopbackCluster, submission: str) -> dict[str, int]:
    from ray.util.state import list_tasks

    job = _ray_job_id(cluster, submission)
    nodes: dict[str, int] = {}
    for t in list_tasks(address=cluster.dashboard, limit=10000, detail=True):
        if t.job_id == job and "relshard_decode" in t.name and t.node_id:
            nodes[t.node_id] = nodes.get(t.node_id, 0) + 1
    return nodes


def _keys(out: Path) -> list[str]:
    return pq.ParquetDataset(out / "index").read(columns=["key"]).column("key").to_pylist()


def test_submitted_job_runs_on_both_nodes_and_resources_decide_placement(cluster, tmp_path):
    from relshard.cluster import jobs

    src = _inputs(tmp_path / "src", 16)
    sid = jobs.submit(_spec(src, tmp_path / "out"), cluster.dashboard)
    assert sid.startswith("relshard-cluster-")
    info = jobs.wait(sid, cluster.dashboard, timeout_s=300)
    assert info.status == "SUCCEEDED", jobs.logs(sid, cluster.dashboard)[-3000:]
    assert len(_decode_nodes(cluster, sid)) == 2
    assert sorted(_keys(tmp_path / "out")) == sorted(set(_keys(tmp_path / "out")))
    assert len(_keys(tmp_path / "out")) == 16

    # decode asks for the custom resource only the second node has: it all runs there
    sid2 = jobs.submit(_spec(src, tmp_path / "out2", resources={"custom": {"decode": 1}}),
                       cluster.dashboard)
    assert jobs.wait(sid2, cluster.dashboard, timeout_s=300).status == "SUCCEEDED"
    (decode_node,) = _decode_nodes(cluster, sid2)
    assert decode_node in {n.node_id for n in cluster.nodes() if n.resources_total.get("decode")}


def test_losing_a_node_mid_run_loses_and_duplicates_nothing(cluster, tmp_path):
    from relshard.cluster import jobs

    n = 40
    src = _inputs(tmp_path / "src", n)
    out = tmp_path / "out"
    sid = jobs.submit(_spec(src, out), cluster.dashboard)
    worker_node = next(nd.node_id for nd in cluster.nodes() if nd.resources_total.get("decode"))
    wait_for(lambda: _decode_nodes(cluster, sid).get(worker_node, 0) >= 2, 240,
             "decode tasks on the second node")
    kill_group(cluster.workers[0])
    info = jobs.wait(sid, cluster.dashboard, timeout_s=600)
    assert info.status == "SUCCEEDED", jobs.logs(sid, cluster.dashboard)[-3000:]
    keys = _keys(out)
    assert len(keys) == len(set(keys)) == n
    assert not list((out / "shards").glob(".*tmp*"))
