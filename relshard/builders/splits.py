"""Train/val/test splits without leakage, stratified by subject count.

Samples are grouped before they are split, and a group never straddles splits:

- every clip and window of one source (same ``uri``) is one group;
- sources with the same content (``sha256`` of the input file) join one group,
  so exact duplicates under different names cannot leak across splits.

The groups are joined with a union-find over both keys. Each group gets a
stratum, its most common subject count (capped at ``max_subjects``, e.g.
0, 1, 2, 3+). Within each stratum the groups are shuffled with ``seed`` and
dealt, largest first, to whichever split is furthest below its target share of
that stratum's samples, so every split gets about its fraction of each stratum.
Pure Python; the same rows, fractions and seed always give the same splits.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SampleRow:
    """What the splitter needs of one sample (a row of the run's index)."""

    key: str
    uri: str
    sha256: str | None
    n_subjects: int


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def leak_groups(rows: Sequence[SampleRow]) -> list[list[int]]:
    """Row indices grouped by shared source uri or content hash, in first-row order."""
    uf = _UnionFind(len(rows))
    first: dict[tuple[str, str], int] = {}
    for i, row in enumerate(rows):
        for tag, value in (("uri", row.uri), ("sha", row.sha256)):
            if not value:
                continue
            j = first.setdefault((tag, value), i)
            uf.union(i, j)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(rows)):
        groups[uf.find(i)].append(i)
    return [groups[r] for r in sorted(groups)]


def stratum(rows: Sequence[SampleRow], members: list[int], max_subjects: int) -> int:
    """The group's most common subject count, capped (ties: the smaller count)."""
    counts = Counter(min(rows[i].n_subjects, max_subjects) for i in members)
    return min(counts, key=lambda c: (-counts[c], c))


def assign_splits(
    rows: Sequence[SampleRow],
    fractions: dict[str, float],
    seed: int = 0,
    max_subjects: int = 3,
) -> dict[str, list[int]]:
    """Row indices per split (sorted by key), no group split, each stratum in proportion."""
    names = [n for n in fractions if fractions[n] > 0]
    total = sum(fractions[n] for n in names)
    if not names or total <= 0:
        raise ValueError("split fractions must include at least one positive share")
    share = {n: fractions[n] / total for n in names}
    rng = random.Random(seed)
    by_stratum: dict[int, list[list[int]]] = defaultdict(list)
    for members in leak_groups(rows):
        by_stratum[stratum(rows, members, max_subjects)].append(members)
    out: dict[str, list[int]] = {n: [] for n in names}
    for s in sorted(by_stratum):
        groups = by_stratum[s]
        rng.shuffle(groups)
        groups.sort(key=len, reverse=True)  # stable: equal sizes keep the shuffled order
        size = sum(len(g) for g in groups)
        got = dict.fromkeys(names, 0)
        for members in groups:
            # the split furthest below its target after taking this group
            best = max(names, key=lambda n: (share[n] * size - got[n], share[n]))
            got[best] += len(members)
            out[best].extend(members)
    for name in out:
        out[name].sort(key=lambda i: rows[i].key)
    return out


def check_no_leak(rows: Sequence[SampleRow], splits: dict[str, list[int]]) -> None:
    """Raise ``ValueError`` if a source uri or content hash appears in two splits."""
    seen: dict[tuple[str, str], str] = {}
    for name, members in splits.items():
        for i in members:
            for tag, value in (("uri", rows[i].uri), ("sha256", rows[i].sha256)):
                if value and seen.setdefault((tag, value), name) != name:
                    raise ValueError(f"{tag} {value} is in both {seen[(tag, value)]} and {name}")
