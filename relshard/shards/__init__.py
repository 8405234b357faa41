"""The shard format, both directions: layout, tar writing and the one tar reader, parquet
index and rejects, commit protocol, recovery, manifest, and the items stages hand the writer.

The public entry points are :class:`ShardWriter` (one per write task),
:func:`recover` and :func:`done_input_keys` (before a run or resume), and
:func:`build_manifest` / :func:`write_manifest` (after all units are committed).
Modules: :mod:`.layout` (paths, :func:`~relshard.shards.layout.is_local`),
:mod:`.item` (WorkItem, the data model between stages), :mod:`.members` and
:mod:`.tarwriter` (writing), :mod:`.tarread` (the one reader: headers, PAX,
spans) and :mod:`.decoding` (member values), :mod:`.index`, :mod:`.ledger`,
:mod:`.manifest`, :mod:`.commit`, :mod:`.lease`, :mod:`.recovery`.
"""

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
