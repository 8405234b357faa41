"""relshard: raw videos, images and event logs to relational training shards, on Ray.

The Python API (:mod:`relshard.api`, loaded on first use so ``import relshard`` stays light)::

    import relshard

    spec = relshard.spec_from("examples/demo.yaml", output={"path": "out/demo"})
    summary = relshard.run(spec)            # RunSummary: counts, rejects, paths; .to_dict()
    relshard.verify("out/demo").ok
    relshard.stats("out/demo").to_dict()
    relshard.build_benchmark("out/demo", to="bench/demo")
"""

from relshard.errors import RejectBudgetExceeded, RelshardError, SpecError
from relshard.record import SCHEMA_VERSION, Reject, SampleRecord
from relshard.spec import PipelineSpec, load_spec

__version__ = "0.1.0"

_API = ("build_benchmark", "evaluate", "export", "run", "show", "spec_from", "stats",
        "submit", "train", "verify")

__all__ = [
    "SCHEMA_VERSION",
    "PipelineSpec",
    "Reject",
    "RejectBudgetExceeded",
    "RelshardError",
    "RunSummary",
    "SampleRecord",
    "ShardLoader",
    "ShardStream",
    "SpecError",
    "__version__",
    "build_benchmark",
    "evaluate",
    "export",
    "load_spec",
    "run",
    "show",
    "spec_from",
    "stats",
    "submit",
    "train",
    "verify",
]

_LAZY = {
    "ShardStream": "relshard.training.stream",
    "ShardLoader": "relshard.training.loader",
    "RunSummary": "relshard.pipelines.runner",
    **dict.fromkeys(_API, "relshard.api"),
}


def __getattr__(name: str) -> object:
    """Load the API, the runner and the torch-based training API on first use, so
    ``import relshard`` stays light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'relshard' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
