"""Connect to Ray: start a local one on demand, or join the cluster a user names.

A local Ray is bound to 127.0.0.1 (on Linux Ray otherwise listens on the outward
interface: it does so unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is set before
``ray`` is imported), runs without its dashboard, and has its auth mode set
explicitly (token auth, Ray's default, unless the environment says otherwise).
For ``--address`` the environment is left as the user set it.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from relshard.errors import RelshardError

LOCAL_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # bind every Ray server to loopback
    "RAY_AUTH_MODE": "token",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "1",
}


# Keep worker processes alive between tasks. Ray's default kills a worker idle for 1 s
# once more workers exist than CPUs, and the shard writers (num_cpus=0) push the count
# over: a 2M-event run started 16 worker processes in 16 s, each paying ~1.5 s of CPU
# to import Ray, Arrow and relshard again. A cluster started with `ray start` takes the
# same settings from RAY_idle_worker_killing_time_threshold_ms (see docs/scale.md).
WORKER_POOL = {"idle_worker_killing_time_threshold_ms": 300_000}


def set_local_env() -> None:
    """Set the local-cluster environment; Ray reads it when first imported."""
    if "ray" in sys.modules:
        # Imported already (an embedding program did): the auth mode is fixed for this
        # process, so leave it, and switch the interface choice off by hand.
        import ray._private.ray_constants as rc

        rc.ENABLE_RAY_CLUSTER = False
        return
    for key, value in LOCAL_ENV.items():
        os.environ.setdefault(key, value)


def connect(address: str | None, num_cpus: int | None = None, *,
            runtime_env: dict[str, Any] | None = None) -> bool:
    """Initialise Ray; return True when this call started a local instance."""
    if address in (None, "", "local"):
        set_local_env()
        address = None
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {
        "logging_level": logging.WARNING,
        "log_to_driver": True,
        "configure_logging": True,
    }
    if runtime_env:
        kwargs["runtime_env"] = runtime_env
    if address is None:
        kwargs.update(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                      _system_config=WORKER_POOL)
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RelshardError(
            f"Could not connect to Ray at {address!r} ({str(exc).splitlines()[0]}); check "
            f"--address (e.g. auto, ray://HOST:10001) and that the cluster is running."
        ) from None
    return address is None


def shutdown() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
