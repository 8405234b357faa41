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
    "SpecError",
    "__version__",
    "load_spec",
]
