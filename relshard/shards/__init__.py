"""The shard format, both directions: layout, tar writing and the one tar reader, parquet
index and rejects, commit protocol, recovery, manifest, and the items stages hand the writer.

The public entry points are :class:`ShardWriter` (one per write task),
:func:`recover` and :func:`done_input_keys` (before a run or resume), and
:func:`build_manifest` / :func:`write_manifest` (after all units are committed).
Modules: :mod:`.layout` (paths, :func:`~relshard.shards.layout.is_local`),
:mod:`.item` (WorkItem, the data model between stages), :mod:`.members` and
:mod:`.tarwriter` (writing), :mod:`.tarread` (the one reader: headers, PAX,
spans) and :mod:`.decoding` (member values), :mod:`.index`, :mod:`.ledger`,
:mod:`.manifest`, :mod:`.commit`, :mod:`.lease`, :mod:`.recovery`, and
:mod:`.parquet_read` (every parquet read: never a Python file object to pyarrow).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported on first use below: the decode child imports only .item
    from relshard.shards.index import UnitInfo
    from relshard.shards.layout import OutputLayout
    from relshard.shards.manifest import (
        build_manifest,
        read_manifest,
        write_manifest,
        write_resolved_spec,
    )
    from relshard.shards.recovery import RecoveryReport, done_input_keys, recover
    from relshard.shards.writer import ShardWriter, WriteSummary

_WHERE = {
    "UnitInfo": "index",
    "OutputLayout": "layout",
    "build_manifest": "manifest",
    "read_manifest": "manifest",
    "write_manifest": "manifest",
    "write_resolved_spec": "manifest",
    "RecoveryReport": "recovery",
    "done_input_keys": "recovery",
    "recover": "recovery",
    "ShardWriter": "writer",
    "WriteSummary": "writer",
}

__all__ = [
    "OutputLayout",
    "RecoveryReport",
    "ShardWriter",
    "UnitInfo",
    "WriteSummary",
    "build_manifest",
    "done_input_keys",
    "read_manifest",
    "recover",
    "write_manifest",
    "write_resolved_spec",
]


def __getattr__(name: str) -> object:
    """The entry points, loaded on first use: a process that needs only
    :mod:`relshard.shards.item` (the decode child) does not import pyarrow and the
    writer through this package (~0.1 CPU-s a child start)."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
