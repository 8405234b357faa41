"""A real two-node Ray cluster on loopback: submit jobs, place by resource, lose a node.

The head is started with `ray start --head` on 127.0.0.1 with its own ports and temp
dir; a second node joins with a custom `decode` resource. Both are stopped by PID
(their process groups), never with `ray stop`, which would end every Ray of the user.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO, SAMPLES

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    dashboard: str
    gcs: str
    head: subprocess.Popen
    worker: subprocess.Popen
    env: dict[str, str]

    def nodes(self) -> list:
        from ray.util.state import list_nodes

        return [n for n in list_nodes(address=self.dashboard) if n.state == "ALIVE"]


def _wait(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _agent_ports() -> list[str]:
    """Own ports for the per-node agents: the defaults (e.g. 52365) may be taken by
    another Ray on this machine, and then the job agent never comes up."""
    return ["--dashboard-agent-listen-port", str(_free_port()),
            "--dashboard-agent-grpc-port", str(_free_port()),
            "--metrics-export-port", str(_free_port()),
            "--runtime-env-agent-port", str(_free_port())]


def _job_agent_ready(dashboard: str) -> bool:
    """The head accepts and runs a trivial job (its job agent starts after the node)."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(dashboard)
    sid = client.submit_job(entrypoint="python -c pass", entrypoint_num_cpus=0)
    deadline = time.monotonic() + 60
    while str(client.get_job_status(sid)) not in ("SUCCEEDED", "FAILED", "STOPPED"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    temp = tmp_path_factory.mktemp("rayc")
    gcs_port, dash_port = _free_port(), _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": str(REPO)}
    head_env = {**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
         "--port", str(gcs_port), "--dashboard-host", "127.0.0.1",
         "--dashboard-port", str(dash_port), "--ray-client-server-port", str(_free_port()),
         "--temp-dir", str(temp), "--num-cpus", "1", "--disable-usage-stats",
         *_agent_ports()],
        env=head_env, start_new_session=True, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker_env = {k: v for k, v in env.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    worker = None
    c = None
    try:
        dashboard = f"http://127.0.0.1:{dash_port}"
        os.environ["RAY_AUTH_MODE"] = os.environ.get("RAY_AUTH_MODE", "token")
        probe = Cluster(dashboard, f"127.0.0.1:{gcs_port}", head, head, env)
        _wait(lambda: len(probe.nodes()) == 1, 90, "the head node")
        _wait(lambda: _job_agent_ready(dashboard), 120, "the head's job agent")
        worker = subprocess.Popen(
            [sys.executable, str(REPO / "tests/helpers/ray_loopback_node.py"), "start",
             "--block", "--address", f"127.0.0.1:{gcs_port}", "--node-ip-address",
             "127.0.0.1", "--num-cpus", "1", "--resources", json.dumps({"decode": 2}),
             "--disable-usage-stats", *_agent_ports()],
            env=worker_env, start_new_session=True, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        c = Cluster(dashboard, probe.gcs, head, worker, env)
        _wait(lambda: len(c.nodes()) == 2, 90, "the second node")
        yield c
    finally:
        if worker is not None:
            _kill_group(worker)
        _kill_group(head)


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


def _ray_job_id(cluster: Cluster, submission: str) -> str:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(cluster.dashboard).get_job_info(submission).job_id


def _decode_nodes(cluster: Cluster, submission: str) -> dict[str, int]:
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
    assert decode_node != cluster.nodes()[0].node_id or len(cluster.nodes()) == 2
    assert decode_node in {n.node_id for n in cluster.nodes() if n.resources_total.get("decode")}


def test_losing_a_node_mid_run_loses_and_duplicates_nothing(cluster, tmp_path):
    from relshard.cluster import jobs

    n = 40
    src = _inputs(tmp_path / "src", n)
    out = tmp_path / "out"
    sid = jobs.submit(_spec(src, out), cluster.dashboard)
    worker_node = next(nd.node_id for nd in cluster.nodes() if nd.resources_total.get("decode"))
    _wait(lambda: _decode_nodes(cluster, sid).get(worker_node, 0) >= 2, 240,
          "decode tasks on the second node")
    _kill_group(cluster.worker)
    info = jobs.wait(sid, cluster.dashboard, timeout_s=600)
    assert info.status == "SUCCEEDED", jobs.logs(sid, cluster.dashboard)[-3000:]
    keys = _keys(out)
    assert len(keys) == len(set(keys)) == n
    assert not list((out / "shards").glob(".*tmp*"))
