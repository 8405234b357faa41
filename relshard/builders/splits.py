"""Train/val/test splits without leakage, stratified by subject count, never silently empty.

Samples are grouped before they are split, and a group never straddles splits.
A union-find joins two samples when any of these rules holds (each rule can be
reported on its own: how many groups it merged that the rules before it had not):

- ``sha256``: the same input content (exact duplicates under different names);
- ``uri``: the same source (every clip of one video, every image of one file);
- ``near_duplicate``: perceptually the same frames (pHash within a Hamming
  threshold, see :mod:`relshard.builders.phash`): grayscale / RGBA / rotated
  copies of one photo, one clip encoded twice;
- ``sequence``: for event windows, the same event sequence. Windows are grouped
  by ``(uri, sequence)`` and ``(sha256, sequence)`` instead of by uri and sha256,
  so one log with many sequences splits by sequence.

Each group gets a stratum, its most common subject count (capped at
``max_subjects``). Within each stratum the groups are shuffled with ``seed`` and
dealt, largest first, to whichever split is furthest below its target share; then
every split with a positive share that holds fewer than ``min_per_split`` groups
takes the smallest group of the split with the most groups to spare. When there
are not enough groups at all, :class:`SplitError` says how many exist and how many
are needed (``allow_empty`` records a warning instead).

:func:`assign_time_splits` is the forecasting split of event windows: within each
sequence the last shares of its time span go to val and test; a window that would
straddle a cut is dropped (and counted), so no event is in two splits.

Pure Python; the same rows, settings and seed always give the same splits.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

SPLITS = ("train", "val", "test")
RULES = ("sha256", "uri", "sequence", "near_duplicate")


class SplitError(ValueError):
    """The samples cannot be split as asked (one sentence)."""


@dataclass(frozen=True)
class SampleRow:
    """What the splitter needs of one sample (its index row, plus what its record says)."""

    key: str
    uri: str
    sha256: str | None
    n_subjects: int
    sequence: str | None = None  # event windows: the sequence id
    span: tuple[float, float] | None = None  # event windows: first and last event time


@dataclass
class Grouping:
    """The leak groups and what each rule did."""

    groups: list[list[int]]  # row indices, in first-row order
    merged: dict[str, int] = field(default_factory=dict)  # rule -> unions it made


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        self.parent[max(ra, rb)] = min(ra, rb)
        return True


def rule_keys(row: SampleRow) -> list[tuple[str, str]]:
    """The exact-match ``(rule, value)`` keys of a row: sha256, uri, or their sequence forms."""
    if row.sequence is not None:
        keys = [("sequence", f"uri:{row.uri}\x00{row.sequence}")]
        if row.sha256:
            keys.append(("sequence", f"sha:{row.sha256}\x00{row.sequence}"))
        return keys
    keys = [("uri", row.uri)] if row.uri else []
    if row.sha256:
        keys.insert(0, ("sha256", row.sha256))
    return keys


def leak_groups(rows: Sequence[SampleRow],
                near_pairs: Sequence[tuple[int, int]] = ()) -> Grouping:
    """Group rows by the exact rules, then join the near-duplicate pairs."""
    uf = _UnionFind(len(rows))
    merged = dict.fromkeys(RULES, 0)
    first: dict[tuple[str, str], int] = {}
    keyed = [rule_keys(row) for row in rows]
    for rule in ("sha256", "uri", "sequence"):
        for i, keys in enumerate(keyed):
            for tag, value in keys:
                if tag == rule:
                    j = first.setdefault((tag, value), i)
                    merged[rule] += uf.union(i, j)
    for a, b in near_pairs:
        merged["near_duplicate"] += uf.union(a, b)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(rows)):
        groups[uf.find(i)].append(i)
    return Grouping([groups[r] for r in sorted(groups)], merged)


def stratum(rows: Sequence[SampleRow], members: list[int], max_subjects: int) -> int:
    """The group's most common subject count, capped (ties: the smaller count)."""
    counts = Counter(min(rows[i].n_subjects, max_subjects) for i in members)
    return min(counts, key=lambda c: (-counts[c], c))


def _shares(fractions: dict[str, float]) -> dict[str, float]:
    names = [n for n in fractions if fractions[n] > 0]
    total = sum(fractions[n] for n in names)
    if not names or total <= 0:
        raise SplitError("The split shares must include at least one positive share.")
    return {n: fractions[n] / total for n in names}


def _not_enough(what: str, have: int, shares: dict[str, float], need: int) -> SplitError:
    return SplitError(
        f"The run has {have} {what}, but {len(shares)} splits ({', '.join(shares)}) with at "
        f"least {need} each need {need * len(shares)}; give a split a 0 share, add data, "
        "lower --min-per-split or pass --allow-empty.")


def assign_splits(
    rows: Sequence[SampleRow],
    fractions: dict[str, float],
    seed: int = 0,
    max_subjects: int = 3,
    *,
    groups: list[list[int]] | None = None,
    min_per_split: int = 1,
    allow_empty: bool = False,
    warnings: list[str] | None = None,
) -> dict[str, list[int]]:
    """Row indices per split (sorted by key), no group split, each stratum in proportion.

    Raises :class:`SplitError` when a split with a positive share would get fewer than
    ``min_per_split`` groups, unless ``allow_empty`` (then a warning is appended to
    ``warnings``).
    """
    share = _shares(fractions)
    names = list(share)
    groups = groups if groups is not None else leak_groups(rows).groups
    if len(groups) < min_per_split * len(names):
        err = _not_enough("leak groups" if len(groups) != 1 else "leak group", len(groups),
                          share, min_per_split)
        if not allow_empty:
            raise err
        if warnings is not None:
            warnings.append(str(err))
    rng = random.Random(seed)
    by_stratum: dict[int, list[list[int]]] = defaultdict(list)
    for members in groups:
        by_stratum[stratum(rows, members, max_subjects)].append(members)
    dealt: dict[str, list[tuple[int, list[int]]]] = {n: [] for n in names}
    for s in sorted(by_stratum):
        bucket = list(by_stratum[s])
        rng.shuffle(bucket)
        bucket.sort(key=len, reverse=True)  # stable: equal sizes keep the shuffled order
        size = sum(len(g) for g in bucket)
        got = dict.fromkeys(names, 0)
        for members in bucket:
            # the split furthest below its target after taking this group
            best = max(names, key=lambda n: (share[n] * size - got[n], share[n]))
            got[best] += len(members)
            dealt[best].append((s, members))
    _fill_short_splits(dealt, share, min_per_split)
    out = {n: sorted((i for _, m in dealt[n] for i in m), key=lambda i: rows[i].key)
           for n in names}
    for n in fractions:  # a zero share is an empty split, on purpose
        out.setdefault(n, [])
    return out


def _fill_short_splits(dealt: dict[str, list[tuple[int, list[int]]]], share: dict[str, float],
                       min_per_split: int) -> None:
    """Move the smallest group of the split with most to spare into each short split."""
    for name in sorted(share, key=lambda n: share[n]):
        while len(dealt[name]) < min_per_split:
            donors = [n for n in dealt if n != name and len(dealt[n]) > min_per_split]
            if not donors:
                return
            donor = max(donors, key=lambda n: (len(dealt[n]) / share[n], n))
            pick = min(range(len(dealt[donor])), key=lambda k: len(dealt[donor][k][1]))
            dealt[name].append(dealt[donor].pop(pick))


def assign_time_splits(
    rows: Sequence[SampleRow],
    fractions: dict[str, float],
    *,
    min_per_split: int = 1,
    allow_empty: bool = False,
    warnings: list[str] | None = None,
) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """Per sequence, the last shares of its time span go to the later splits.

    Returns the row indices per split and a report (cuts per sequence are not kept;
    the counts of windows dropped because they straddle a cut are). Rows without a
    sequence or span raise :class:`SplitError`.
    """
    share = _shares(fractions)
    order = [n for n in SPLITS if n in share] + [n for n in share if n not in SPLITS]
    by_seq: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        if row.sequence is None or row.span is None:
            raise SplitError(f"--split-by time needs event windows, but sample {row.key} is "
                             "not one (it has no sequence or time span).")
        by_seq[(row.uri, row.sequence)].append(i)
    out: dict[str, list[int]] = {n: [] for n in order}
    dropped = 0
    for members in by_seq.values():
        t0 = min(rows[i].span[0] for i in members)  # type: ignore[index]
        t1 = max(rows[i].span[1] for i in members)  # type: ignore[index]
        cuts, acc = [], 0.0
        for n in order[:-1]:
            acc += share[n]
            cuts.append(t0 + acc * (t1 - t0))
        pos: dict[int, int] = {}
        for i in members:
            lo, hi = rows[i].span  # type: ignore[misc]
            mid = (lo + hi) / 2
            pos[i] = sum(mid >= c for c in cuts)
        # the effective cut before split k is the earliest start of a window placed at k or later
        starts = [min((rows[i].span[0] for i in members if pos[i] >= k),  # type: ignore[index]
                      default=float("inf")) for k in range(len(order))]
        for i in members:
            lo, hi = rows[i].span  # type: ignore[misc]
            k = pos[i]
            if k + 1 < len(order) and hi > starts[k + 1]:
                dropped += 1  # it reaches into a later split
                continue
            out[order[k]].append(i)
    for n in order:
        out[n].sort(key=lambda i: (rows[i].uri, rows[i].sequence or "", rows[i].span or (0, 0)))
    short = [n for n in order if len(out[n]) < min_per_split]
    if short:
        err = SplitError(
            f"The time split leaves {', '.join(f'{n} with {len(out[n])}' for n in short)} "
            f"windows but each split needs at least {min_per_split}; lower its share, add "
            "data or pass --allow-empty.")
        if not allow_empty:
            raise err
        if warnings is not None:
            warnings.append(str(err))
    for n in fractions:
        out.setdefault(n, [])
    return out, {"sequences": len(by_seq), "dropped_straddling_windows": dropped}


def check_no_leak(rows: Sequence[SampleRow], splits: dict[str, list[int]],
                  near_pairs: Sequence[tuple[int, int]] = ()) -> dict[str, dict[str, int]]:
    """Per rule, how many values / pairs were checked and how many cross splits.

    Raises :class:`SplitError` on the first crossing (a bug: the splitter keeps groups whole).
    """
    where: dict[int, str] = {i: n for n, members in splits.items() for i in members}
    report: dict[str, dict[str, int]] = {r: {"checked": 0, "crossing": 0} for r in RULES}
    seen: dict[tuple[str, str], str] = {}
    for i, name in sorted(where.items()):
        for tag, value in rule_keys(rows[i]):
            first = seen.setdefault((tag, value), name)
            if first == name:
                continue
            report[tag]["crossing"] += 1
            shown = value.replace("\x00", " ")
            raise SplitError(f"{tag} {shown} is in both {first} and {name}")
    for tag, _ in seen:
        report[tag]["checked"] += 1
    for a, b in near_pairs:
        if a in where and b in where:
            report["near_duplicate"]["checked"] += 1
            if where[a] != where[b]:
                raise SplitError(f"near-duplicates {rows[a].key} and {rows[b].key} are in both "
                                 f"{where[a]} and {where[b]}")
    return report
