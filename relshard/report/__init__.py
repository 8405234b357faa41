"""Report on a build: figures (``relshard stats``), integrity checks and repair (``verify``),
the HTML report, the sample gallery (``relshard show``, :mod:`.gallery`) and export
(``relshard export``, :mod:`.export`). Shard bytes are read through the shard format's
one tar reader, :mod:`relshard.shards.tarread`.

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
    "BuildStats": "relshard.report.figures",
    "compute_stats": "relshard.report.stats",
    "Comparison": "relshard.report.compare",
    "compare_stats": "relshard.report.compare",
    "render_html": "relshard.report.report_html",
    "VerifyReport": "relshard.report.verify",
    "verify_output": "relshard.report.verify",
    "RepairReport": "relshard.report.repair",
    "repair_output": "relshard.report.repair",
    "InspectError": "relshard.report.tables",
    "UnknownSchemaVersion": "relshard.report.tables",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'relshard.report' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
