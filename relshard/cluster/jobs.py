"""Submit pipeline runs to a Ray cluster as Ray Jobs, and watch or stop them.

``submit`` sends the spec in the job's working directory and relshard itself as a
``py_modules`` entry of the runtime environment (so the cluster runs exactly the
relshard that submitted, even offline), or asks the cluster to pip-install a
pinned version. The entrypoint is ``python -m relshard.cli run spec.yaml
--address auto`` on the head node: the ``python`` first on the head's PATH must be
the environment that holds relshard's dependencies and Ray (cluster.yaml puts it
first). Every function takes the dashboard address
(``http://HEAD:8265``); ``None`` falls back to ``RAY_ADDRESS``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

import relshard
from relshard.deps import require
from relshard.errors import RelshardError
from relshard.spec import PipelineSpec

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

JOB_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


class ClusterError(RelshardError):
    """The cluster could not be reached, or refused a request."""


@dataclass
class JobInfo:
    job_id: str
    status: str
    message: str
    entrypoint: str
    start_time: float | None
    end_time: float | None


def _address(address: str | None) -> str:
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise ClusterError(
            "No cluster address: pass --address http://HEAD:8265 or set RAY_ADDRESS."
        )
    if "://" not in address:
        address = f"http://{address}"
    return address


def _token_available() -> bool:
    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or (Path.home() / ".ray" / "auth_token").is_file())


def _client(address: str | None) -> JobSubmissionClient:
    # Ray's clients default to sending no token; a cluster with token auth (Ray's
    # default) then answers 401. Send the token when one is available, unless the
    # user chose a mode. The variable is read when ray is first imported.
    if "RAY_AUTH_MODE" not in os.environ and _token_available():
        os.environ["RAY_AUTH_MODE"] = "token"
    require("ray.job_submission", "pipeline", "ray")  # Ray's job client: one sentence if absent
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    addr = _address(address)
    try:
        return JobSubmissionClient(addr)
    except AuthenticationError:
        raise ClusterError(
            f"The cluster at {addr} requires token authentication: set RAY_AUTH_TOKEN (or "
            f"RAY_AUTH_TOKEN_PATH) to its token and RAY_AUTH_MODE=token."
        ) from None
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(
            f"Cannot reach the Ray dashboard at {addr} ({str(exc).splitlines()[0][:200]}); "
            f"check --address and that the cluster's dashboard is running."
        ) from None


def _check_job_id(job_id: str) -> str:
    if not JOB_ID_RE.match(job_id):
        raise ClusterError(f"{job_id!r} is not a job id (raysubmit_... or relshard-...).")
    return job_id


def submission_id(spec: PipelineSpec) -> str:
    """``relshard-<name>-<utc time>-<random>``: readable, unique, valid for Ray."""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", spec.name)[:40]
    return f"relshard-{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"


def runtime_env(spec: PipelineSpec, workdir: Path, relshard_from: str,
                env_vars: dict[str, str] | None = None) -> dict[str, Any]:
    """The runtime environment that carries the spec and relshard to the cluster."""
    (workdir / "spec.yaml").write_text(
        yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    env: dict[str, Any] = {"working_dir": str(workdir)}
    if relshard_from == "local":
        env["py_modules"] = [str(Path(relshard.__file__).parent)]
    elif relshard_from == "pypi":
        env["pip"] = [f"relshard=={relshard.__version__}"]
    elif relshard_from != "installed":
        raise ClusterError(
            f"--relshard-from must be local, pypi or installed, not {relshard_from!r}."
        )
    if env_vars:
        env["env_vars"] = dict(env_vars)
    return env


def submit(spec: PipelineSpec, address: str | None, *, relshard_from: str = "local",
           job_id: str | None = None, env_vars: dict[str, str] | None = None,
           entrypoint_resources: dict[str, float] | None = None) -> str:
    """Submit ``spec`` as a Ray Job; return its submission id."""
    client = _client(address)
    sid = _check_job_id(job_id) if job_id else submission_id(spec)
    workdir = Path(tempfile.mkdtemp(prefix="relshard-submit-"))
    try:
        env = runtime_env(spec, workdir, relshard_from, env_vars)
        return client.submit_job(
            entrypoint="python -m relshard.cli run spec.yaml --address auto",
            submission_id=sid,
            runtime_env=env,
            metadata={"relshard_version": relshard.__version__, "spec_name": spec.name,
                      "spec_hash": spec.content_hash()},
            entrypoint_num_cpus=0,
            entrypoint_resources=entrypoint_resources,
        )
    except RuntimeError as exc:
        first = str(exc).splitlines()[0][:300]
        raise ClusterError(f"The cluster refused the job: {first}") from None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def status(job_id: str, address: str | None) -> JobInfo:
    client = _client(address)
    try:
        info = client.get_job_info(_check_job_id(job_id))
    except RuntimeError as exc:
        raise ClusterError(f"No job {job_id!r} on this cluster ({str(exc)[:200]}).") from None
    return JobInfo(job_id, str(info.status), info.message or "", info.entrypoint,
                   info.start_time, info.end_time)


def logs(job_id: str, address: str | None) -> str:
    client = _client(address)
    try:
        return client.get_job_logs(_check_job_id(job_id))
    except RuntimeError as exc:
        raise ClusterError(f"No logs for job {job_id!r} ({str(exc)[:200]}).") from None


def follow_logs(job_id: str, address: str | None) -> Iterator[str]:
    """Yield log chunks until the job ends."""
    import asyncio

    client = _client(address)
    agen = client.tail_job_logs(_check_job_id(job_id))
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(agen.__anext__())
            except StopAsyncIteration:
                return
    finally:
        loop.close()


def stop(job_id: str, address: str | None) -> bool:
    client = _client(address)
    try:
        return bool(client.stop_job(_check_job_id(job_id)))
    except RuntimeError as exc:
        raise ClusterError(f"Cannot stop job {job_id!r} ({str(exc)[:200]}).") from None


def wait(job_id: str, address: str | None, timeout_s: float = 3600.0,
         poll_s: float = 1.0) -> JobInfo:
    """Poll until the job reaches a terminal state (or the deadline passes)."""
    deadline = time.monotonic() + timeout_s
    while True:
        info = status(job_id, address)
        if info.status in ("SUCCEEDED", "FAILED", "STOPPED"):
            return info
        if time.monotonic() > deadline:
            raise ClusterError(f"Job {job_id} still {info.status} after {timeout_s:g} s.")
        time.sleep(poll_s)
