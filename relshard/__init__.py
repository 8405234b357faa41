"""relshard: raw videos, images and event logs to relational training shards, on Ray."""

from relshard.errors import RelshardError, SpecError
from relshard.record import SCHEMA_VERSION, Reject, SampleRecord
from relshard.spec import PipelineSpec, load_spec

__version__ = "0.1.0"

__all__ = [
    "SCHEMA_VERSION",
    "PipelineSpec",
    "Reject",
    "RelshardError",
    "SampleRecord",
    "ShardLoader",
    "ShardStream",
    "SpecError",
    "__version__",
    "load_spec",
]

_LAZY = {
    "ShardStream": "relshard.training.stream",
    "ShardLoader": "relshard.training.loader",
}


def __getattr__(name: str) -> object:
    """Load the torch-based training API on first use, so ``import relshard`` stays light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'relshard' has no attribute {name!r}")
