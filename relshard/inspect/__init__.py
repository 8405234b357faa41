"""Inspect a build: figures (``relshard stats``), integrity checks and repair (``verify``).

- :func:`compute_stats` -> :class:`BuildStats`: counts, per-sample histograms,
  mixes, rejects, anonymization leaks and shard balance, out of core with dask;
- :func:`compare_stats` -> :class:`Comparison`: what changed between two builds;
- :func:`render_html`: a self-contained HTML report with inline plots;
- :func:`verify_output` -> :class:`VerifyReport`; :func:`repair_output` rebuilds
  the index and manifest from the shards.

Attributes load lazily, so importing this package costs nothing until used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BuildStats": "relshard.inspect.figures",
    "compute_stats": "relshard.inspect.stats",
    "Comparison": "relshard.inspect.compare",
    "compare_stats": "relshard.inspect.compare",
    "render_html": "relshard.inspect.report_html",
    "VerifyReport": "relshard.inspect.verify",
    "verify_output": "relshard.inspect.verify",
    "RepairReport": "relshard.inspect.repair",
    "repair_output": "relshard.inspect.repair",
    "InspectError": "relshard.inspect.tables",
    "UnknownSchemaVersion": "relshard.inspect.tables",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'relshard.inspect' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
