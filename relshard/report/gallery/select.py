"""Pick index rows at random, reading only a few index columns, never a whole record set.

Without an index filter the rows are chosen by position: the row count of each
index file comes from the manifest (or the file's parquet footer where the
manifest does not list it), ``pool`` global positions are drawn with a seeded
generator, and only the files holding them are read (only the columns the
gallery shows). Time and memory follow ``pool``, not the run.

With index filters (``--where subjects>=3``) each index file is read once,
only the filter columns, the matching rows get a seeded random priority, and
the ``pool`` lowest priorities are kept (a reservoir): memory follows ``pool``,
time the index's filter columns.

The rows come back in random order, so a caller that must read records to
filter further (``--where predicate=holds``) reads them in that order until it
has enough or hits its scan cap.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from relshard.report.gallery.where import Condition
from relshard.shards.layout import (
    INDEX_DIR,
    MANIFEST_NAME,
    SHARDS_DIR,
    TABLE_EXT,
    OutputLayout,
    unit_of,
)
from relshard.shards.parquet_read import read_columns as read_present_columns
from relshard.shards.parquet_read import read_metadata

ROW_COLUMNS = ["key", "input_key", "uri", "shard", "offset", "size", "members", "modality",
               "n_frames", "n_subjects", "n_attributes", "n_relations", "backend", "model",
               "prompt_version", "schema_version"]


@dataclass
class Picked:
    """Candidate index rows in random order, and how many rows there were to pick from."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0  # rows in the index
    matched: int = 0  # rows that pass the index filters (== total without filters)


def index_units(layout: OutputLayout) -> list[str]:
    """Relative paths of the committed index files, sorted."""
    names = (b for b in layout.listdir(INDEX_DIR) if unit_of(b, TABLE_EXT) is not None)
    return [f"{INDEX_DIR}/{b}" for b in names]


def read_columns(layout: OutputLayout, relpath: str, columns: list[str]) -> pa.Table:
    table = read_present_columns(layout.fs, layout.path(relpath), columns)
    for name in columns:  # columns an older index lacks read as nulls
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows))
    return table


def row_counts(layout: OutputLayout, files: list[str]) -> list[int]:
    """Rows per index file: from the manifest where it lists the unit's shard, else the footer."""
    from_manifest: dict[str, int] = {}
    if layout.exists(MANIFEST_NAME):
        import json

        try:
            with layout.fs.open(layout.path(MANIFEST_NAME), "rb") as f:
                shardlist = json.load(f).get("shardlist") or []
            for entry in shardlist:
                url, n = str(entry.get("url", "")), int(entry.get("nsamples", 0))
                if url.startswith(f"{SHARDS_DIR}/") and url.endswith(".tar"):
                    from_manifest[url[len(SHARDS_DIR) + 1 : -4]] = n
        except (ValueError, TypeError, AttributeError, OSError):
            from_manifest = {}
    counts = []
    for relpath in files:
        unit = relpath[len(INDEX_DIR) + 1 : -len(TABLE_EXT)]
        count = from_manifest.get(unit)
        if count is None:
            count = read_metadata(layout.fs, layout.path(relpath)).num_rows
        counts.append(int(count))
    return counts


def _glob_regex(pattern: str) -> str:
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern]
    return "^" + "".join(parts) + "$"


def condition_mask(table: pa.Table, cond: Condition) -> np.ndarray:
    """Rows of ``table`` (holding ``cond.column``) where an index condition holds."""
    assert cond.column is not None
    col = table.column(cond.column)
    if cond.numeric:
        values = pc.cast(col, pa.float64())
        fn = {"=": pc.equal, "!=": pc.not_equal, ">": pc.greater, ">=": pc.greater_equal,
              "<": pc.less, "<=": pc.less_equal}[cond.op]
        mask = fn(values, cond.number())
    else:
        text = pc.cast(col, pa.string())
        if cond.op == "~":
            mask = pc.match_substring(text, cond.value, ignore_case=True)
        elif any(c in cond.value for c in "*?"):
            mask = pc.match_substring_regex(text, _glob_regex(cond.value))
        else:
            mask = pc.equal(text, cond.value)
        if cond.op == "!=":
            return ~np.asarray(mask.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
    return np.asarray(mask.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _rows_of(layout: OutputLayout, picks: dict[int, list[int]], files: list[str]
             ) -> dict[tuple[int, int], dict[str, Any]]:
    out: dict[tuple[int, int], dict[str, Any]] = {}
    for file_no, rows in picks.items():
        table = read_columns(layout, files[file_no], ROW_COLUMNS)
        valid = [r for r in rows if r < table.num_rows]
        for r, row in zip(valid, table.take(valid).to_pylist(), strict=True):
            out[(file_no, r)] = row
    return out


def pick_rows(layout: OutputLayout, conditions: list[Condition], pool: int, seed: int) -> Picked:
    """Up to ``pool`` index rows passing the index ``conditions``, in seeded random order."""
    files = index_units(layout)
    picked = Picked()
    if not files or pool <= 0:
        if files:
            picked.total = picked.matched = sum(row_counts(layout, files))
        return picked
    index_conds = [c for c in conditions if c.on_index]
    if not index_conds:
        counts = row_counts(layout, files)
        picked.total = picked.matched = sum(counts)
        if picked.total == 0:
            return picked
        rng = np.random.default_rng(seed)
        positions = rng.choice(picked.total, size=min(pool, picked.total), replace=False)
        bounds = np.cumsum(counts)
        order = [(int(f), int(p - (bounds[f] - counts[f])))
                 for p in positions for f in [int(np.searchsorted(bounds, p, side="right"))]]
    else:
        order = _reservoir(layout, files, index_conds, pool, seed, picked)
    by_file: dict[int, list[int]] = defaultdict(list)
    for f, r in order:
        by_file[f].append(r)
    rows = _rows_of(layout, by_file, files)
    picked.rows = [rows[p] for p in order if p in rows]
    return picked


def _reservoir(layout: OutputLayout, files: list[str], conds: list[Condition], pool: int,
               seed: int, picked: Picked) -> list[tuple[int, int]]:
    columns = sorted({c.column for c in conds if c.column is not None})
    best_p = np.empty(0)
    best_f = np.empty(0, dtype=np.int64)
    best_r = np.empty(0, dtype=np.int64)
    for file_no, relpath in enumerate(files):
        table = read_columns(layout, relpath, columns)
        n = table.num_rows
        picked.total += n
        if n == 0:
            continue
        mask = np.ones(n, dtype=bool)
        for cond in conds:
            mask &= condition_mask(table, cond)
        rows = np.flatnonzero(mask)
        picked.matched += len(rows)
        prio = np.random.default_rng([seed, file_no]).random(n)[rows]
        best_p = np.concatenate([best_p, prio])
        best_f = np.concatenate([best_f, np.full(len(rows), file_no, dtype=np.int64)])
        best_r = np.concatenate([best_r, rows.astype(np.int64)])
        if len(best_p) > 2 * pool:
            keep = np.argpartition(best_p, pool)[:pool]
            best_p, best_f, best_r = best_p[keep], best_f[keep], best_r[keep]
    order = np.argsort(best_p, kind="stable")[:pool]
    return [(int(best_f[i]), int(best_r[i])) for i in order]


def find_keys(layout: OutputLayout, keys: set[str]) -> dict[str, dict[str, Any]]:
    """The index rows of ``keys`` in another output (one pass over its ``key`` column)."""
    found: dict[str, dict[str, Any]] = {}
    if not keys:
        return found
    wanted = pa.array(sorted(keys), type=pa.string())
    for relpath in index_units(layout):
        table = read_columns(layout, relpath, ["key"])
        mask = pc.is_in(pc.cast(table.column("key"), pa.string()), value_set=wanted)
        rows = np.flatnonzero(np.asarray(mask.fill_null(False).to_numpy(zero_copy_only=False)))
        if len(rows):
            full = read_columns(layout, relpath, ROW_COLUMNS).take(rows.tolist())
            for row in full.to_pylist():
                found.setdefault(str(row["key"]), row)
        if len(found) == len(keys):
            break
    return found
