"""Start and stop a real multi-node Ray cluster on 127.0.0.1, for tests and benches.

The head runs `ray start --head --block` with its own ports and temp dir; each
extra node joins through ray_loopback_node.py. Every node is its own process
group, stopped by PID (never `ray stop`, which ends every Ray of the user).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def agent_ports() -> list[str]:
    """Own ports for the per-node agents: the defaults (e.g. 52365) may be taken by
    another Ray on this machine, and then the job agent never comes up."""
    return ["--dashboard-agent-listen-port", str(free_port()),
            "--dashboard-agent-grpc-port", str(free_port()),
            "--metrics-export-port", str(free_port()),
            "--runtime-env-agent-port", str(free_port())]


def wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # not up yet
            if pred():
                return
        time.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


def kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


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


@dataclass
class LoopbackCluster:
    temp: Path
    head_cpus: int = 1
    gcs_port: int = field(default_factory=free_port)
    dash_port: int = field(default_factory=free_port)
    head: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dash_port}"

    def _env(self) -> dict[str, str]:
        # A job's entrypoint (`python -m relshard.cli ...`) finds python on the node's
        # PATH, as on a real cluster: put this environment's first.
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0",
               "PYTHONPATH": str(REPO), "PATH": path}
        env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        return env

    def nodes(self) -> list:
        from ray.util.state import list_nodes

        return [n for n in list_nodes(address=self.dashboard) if n.state == "ALIVE"]

    def start(self) -> LoopbackCluster:
        os.environ.setdefault("RAY_AUTH_MODE", "token")  # this process's clients send it
        self.head = subprocess.Popen(
            [RAY, "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
             "--port", str(self.gcs_port), "--dashboard-host", "127.0.0.1",
             "--dashboard-port", str(self.dash_port),
             "--ray-client-server-port", str(free_port()), "--temp-dir", str(self.temp),
             "--num-cpus", str(self.head_cpus), "--disable-usage-stats", *agent_ports()],
            env={**self._env(), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: len(self.nodes()) == 1, 90, "the head node")
        wait_for(lambda: _job_agent_ready(self.dashboard), 120, "the head's job agent")
        return self

    def add_node(self, cpus: int = 1, resources: dict[str, float] | None = None
                 ) -> subprocess.Popen:
        want = len(self.nodes()) + 1
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "tests/helpers/ray_loopback_node.py"), "start",
             "--block", "--address", f"127.0.0.1:{self.gcs_port}", "--node-ip-address",
             "127.0.0.1", "--num-cpus", str(cpus), "--resources", json.dumps(resources or {}),
             "--disable-usage-stats", *agent_ports()],
            env=self._env(), start_new_session=True, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.workers.append(proc)
        wait_for(lambda: len(self.nodes()) == want, 90, "the new node")
        return proc

    def stop(self) -> None:
        for proc in self.workers:
            kill_group(proc)
        if self.head is not None:
            kill_group(self.head)
