"""``manifest.json``: the run's shard list and totals, built from index footers alone.

The manifest is written last, after every unit is committed, so its presence
means the run finished. It is also a ``wids`` shard index
(``"__kind__": "wids-shard-index-v1"``, ``"wids_version": 1`` and a
``shardlist`` of ``{url, nsamples}``): ``wids.ShardListDataset("ROOT/manifest.json")``
resolves each ``url`` against the manifest's folder. Shard urls are relative
(``shards/UNIT.tar``), so an output folder can be moved or copied as a whole.

Example::

    {"__kind__": "wids-shard-index-v1", "wids_version": 1, "schema_version": 1,
     "name": "demo", "spec_hash": "3f2a...", "relshard_version": "0.1.0",
     "created": "2025-01-01T00:00:00+00:00",
     "totals": {"samples": 10, "shards": 1, "bytes": 81920, "inputs_written": 10,
                "inputs_rejected": 2, "units": 2},
     "shardlist": [{"url": "shards/w0-0000.tar", "nsamples": 10, "filesize": 81920,
                    "sha256": "..."}]}
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from relshard.record import SCHEMA_VERSION
from relshard.shards.commit import write_json_atomic
from relshard.shards.index import UnitInfo
from relshard.shards.layout import MANIFEST_NAME, SPEC_RESOLVED_NAME, OutputLayout
from relshard.shards.ledger import read_ledger
from relshard.shards.recovery import committed_units

WIDS_KIND = "wids-shard-index-v1"
WIDS_VERSION = 1
RESERVED_KEYS = frozenset({
    "__kind__", "wids_version", "schema_version", "name", "spec_hash", "relshard_version",
    "created", "totals", "shardlist",
})


def build_manifest(
    root: str | OutputLayout, name: str, spec_hash: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The manifest of the units committed under ``root``, sorted by shard name.

    Units without samples count in the totals but are left out of ``shardlist``.
    ``inputs_rejected`` counts each rejected input once, by its latest reject, and not
    at all once a later run wrote it (a retried reject, :mod:`relshard.shards.ledger`).
    ``extra`` adds top-level keys; it may not override the manifest's own keys.
    """
    from relshard import __version__

    clash = RESERVED_KEYS & set(extra or {})
    if clash:
        raise ValueError(f"manifest extra keys {sorted(clash)} would override manifest fields")
    layout = OutputLayout.open(root)
    by_name = committed_units(layout)
    units = sorted(by_name.values(), key=lambda u: u.name)
    shardlist = [
        {"url": u.shard, "nsamples": u.nsamples, "filesize": u.bytes, "sha256": u.sha256}
        for u in units
        if u.shard is not None and u.nsamples > 0
    ]
    totals = {
        "samples": sum(u.nsamples for u in units),
        "shards": len(shardlist),
        "bytes": sum(u.bytes for u in units),
        "inputs_written": sum(u.ninputs for u in units),
        "inputs_rejected": _inputs_rejected(layout, by_name),
        "units": len(units),
    }
    manifest: dict[str, Any] = {
        "__kind__": WIDS_KIND,
        "wids_version": WIDS_VERSION,
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "spec_hash": spec_hash,
        "relshard_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "totals": totals,
        "shardlist": shardlist,
    }
    manifest.update(extra or {})
    return manifest


def _inputs_rejected(layout: OutputLayout, units: dict[str, UnitInfo]) -> int:
    """Inputs rejected and not written since, each counted once (see :mod:`.ledger`)."""
    rows = sum(u.nrejects for u in units.values())
    if not rows:
        return 0
    return len(read_ledger(layout, units, later_writes_only=True).rejected)


def write_manifest(root: str | OutputLayout, manifest: dict[str, Any]) -> None:
    """Write ``ROOT/manifest.json`` atomically (temporary file and rename where local)."""
    layout = OutputLayout.open(root)
    layout.fs.makedirs(layout.root, exist_ok=True)
    write_json_atomic(layout, MANIFEST_NAME, manifest)


def write_resolved_spec(root: str | OutputLayout, spec_data: dict[str, Any]) -> None:
    """Write ``ROOT/spec.resolved.json`` (e.g. ``spec.model_dump(mode="json")``) atomically."""
    layout = OutputLayout.open(root)
    layout.fs.makedirs(layout.root, exist_ok=True)
    write_json_atomic(layout, SPEC_RESOLVED_NAME, spec_data)


def read_manifest(root: str | OutputLayout) -> dict[str, Any]:
    """Load ``ROOT/manifest.json``."""
    layout = OutputLayout.open(root)
    with layout.fs.open(layout.path(MANIFEST_NAME), "rb") as f:
        data: dict[str, Any] = json.load(f)
    return data
