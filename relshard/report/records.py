"""Record-level figures from a uniform sample of ``KEY.json`` members, read by offset.

The index says where each sample starts in its shard (``offset``), and a sample's
first member is its ``KEY.json``. A deterministic, uniform sample of the index
(a hash of the key below a threshold, computed out of core with dask) picks about
``n`` samples; each shard is then opened once and only those records are read, by
seeking to their offsets, so the cost follows ``n``, not the size of the shards.

An *anonymization leak* is a relational caption that, outside its placeholders,
still contains a content word of one of the sample's attributes (by whole word
and by stem, case-insensitive; function words and relation words do not count),
or whose relations' predicates hold one: the check the annotator itself applies
(:mod:`relshard.workers.annotate.anonymize`), exactly what the relational caption
must not reveal.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from relshard.report.figures import RecordFigures
from relshard.report.tables import OutputTables, check_versions
from relshard.shards.tarread import CorruptSample, iter_entries
from relshard.workers.annotate.anonymize import find_leaks

SAMPLE_COLUMNS = ["key", "shard", "offset"]
_HASH_SPACE = 2**32
MAX_EXAMPLES = 10
MAX_RECORD = 64 * 2**20  # a KEY.json bigger than this is not read
UNBOUNDED = 2**62  # the first member's span is not known: only its own sizes bound the read


def leaked_terms(record: dict[str, Any]) -> list[str]:
    """Attribute words a record's relational caption still contains outside placeholders.

    The same check the annotator applies
    (:func:`relshard.workers.annotate.anonymize.find_leaks`); the record's predicates
    are checked too, never allowed.
    """
    caption = str(record.get("relational_caption") or "")
    if not caption.strip():
        return []
    attributes = [{"text": str(a.get("text") or "")} for a in record.get("attributes") or []]
    predicates = [str(r.get("predicate") or "") for r in record.get("relations") or []]
    return find_leaks(caption, attributes, predicates=predicates)


def read_record_at(fileobj: Any, offset: int) -> dict[str, Any]:
    """The JSON record of the sample whose first tar header is at ``offset``.

    The header is parsed by the shard format's one tar reader
    (:mod:`relshard.shards.tarread`). Raises ``ValueError`` when the member there is
    not a ``.json``, is over :data:`MAX_RECORD` bytes or does not parse.
    """
    def read_at(pos: int, n: int) -> bytes:
        fileobj.seek(offset + pos)
        return bytes(fileobj.read(n))

    try:
        member = next(iter_entries(read_at, UNBOUNDED), None)
    except CorruptSample as exc:
        raise ValueError(f"no tar member at offset {offset}: {exc}") from None
    if member is None or not member.regular or not member.name.endswith(".json"):
        raise ValueError(f"the member at offset {offset} is not a sample's .json")
    if member.size > MAX_RECORD:
        raise ValueError(f"the record at offset {offset} is {member.size} bytes, over the cap")
    raw = read_at(member.start, member.size)
    if len(raw) < member.size:
        raise ValueError(f"the shard ends inside the record at offset {offset}")
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError(f"the record at offset {offset} is not a JSON object")
    return data


def _pick(tables: OutputTables, n: int, total: int) -> Any:
    """About ``n`` index rows chosen uniformly (by key hash), as a small pandas frame."""
    import dask
    import pandas as pd

    index = tables.index(SAMPLE_COLUMNS)
    if n >= total:
        chosen = index
    else:
        threshold = int(_HASH_SPACE * n / total)

        def keep(part: pd.DataFrame) -> pd.DataFrame:
            hashed = pd.util.hash_pandas_object(part["key"], index=False) % _HASH_SPACE
            return part[hashed.to_numpy() < threshold]

        chosen = index.map_partitions(keep, meta=index._meta)
    with dask.config.set(scheduler="threads"):
        (frame,) = dask.compute(chosen)
    return frame.sort_values(["shard", "offset"])


def sample_records(tables: OutputTables, n: int, total: int) -> RecordFigures:
    """Record-level figures from about ``n`` of the ``total`` samples."""
    frame = _pick(tables, n, total)
    predicates: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    versions: set[int] = set()
    sampled = leaked = unreadable = 0
    examples: list[str] = []
    fs = tables.layout.fs
    for shard, rows in frame.groupby("shard", sort=True):
        try:
            f = fs.open(tables.layout.inside(str(shard)), "rb")
        except (FileNotFoundError, ValueError):  # gone, or a path outside the output
            unreadable += len(rows)
            continue
        with f:
            for key, offset in zip(rows["key"], rows["offset"], strict=True):
                try:
                    record = read_record_at(f, int(offset))
                except (ValueError, OSError, EOFError):
                    unreadable += 1
                    continue
                sampled += 1
                versions.add(int(record.get("schema_version", 1)))
                predicates.update(str(r.get("predicate")) for r in record.get("relations") or [])
                categories.update(str(a.get("category")) for a in record.get("attributes") or [])
                kinds.update(str(s.get("kind")) for s in record.get("subjects") or [])
                if leaked_terms(record):
                    leaked += 1
                    if len(examples) < MAX_EXAMPLES:
                        examples.append(str(key))
    check_versions(sorted(versions), f"records of {tables.layout.url}")
    return RecordFigures(
        sampled=sampled, requested=n,
        predicates=dict(predicates.most_common()),
        attribute_categories=dict(categories.most_common()),
        subject_kinds=dict(kinds.most_common()),
        leaked=leaked, leak_rate=leaked / sampled if sampled else 0.0,
        leak_examples=examples, unreadable=unreadable,
    )
