"""The anonymization check of relational captions.

A relational caption must write every entity as its placeholder (``{S1} hands
{A3} to {S2}``). It *leaks* when, outside the placeholders, it still contains a
content word of an attribute's text (``{S1} hands the red cup to {S2}``) or a name
the model gave a subject. Whole words are compared case-insensitively; short and
function words do not count, nor do words of the caption's own predicates.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from relshard.record import PLACEHOLDER_RE

_WORD = re.compile(r"[a-z0-9][a-z0-9'-]*")
MIN_WORD = 3
STOPWORDS = frozenset({
    "a", "an", "the", "and", "or", "of", "on", "in", "at", "to", "for", "with", "from", "by",
    "into", "onto", "over", "under", "near", "next", "his", "her", "their", "its", "this", "that",
    "these", "those", "some", "one", "two", "three", "other", "another", "each", "left", "right",
    "front", "behind", "side", "top", "bottom", "upper", "lower", "body", "part", "parts", "is",
    "are", "was", "were", "be", "being", "been", "has", "have", "having", "wears", "wearing",
    "holds", "holding",
})


def content_words(text: str) -> set[str]:
    """Words of ``text`` that identify an entity: long enough, not function words."""
    return {w for w in _WORD.findall(text.lower()) if len(w) >= MIN_WORD and w not in STOPWORDS}


def find_leaks(relational_caption: str, attributes: Iterable[dict[str, Any]],
               names: Iterable[str] = (), predicates: Iterable[str] = ()) -> list[str]:
    """The attribute words and subject names a relational caption still contains."""
    bare = PLACEHOLDER_RE.sub(" ", relational_caption).lower()
    words = set(_WORD.findall(bare))
    allowed: set[str] = set()
    for p in predicates:
        allowed |= content_words(p.replace("_", " "))
    leaks: list[str] = []
    for name in names:
        name = name.strip()
        if name and re.search(rf"\b{re.escape(name.lower())}\b", bare):
            leaks.append(name)
    for attr in attributes:
        hit = sorted((content_words(attr["text"]) - allowed) & words)
        leaks += [w for w in hit if w not in leaks]
    return leaks


def leak_message(leaks: list[str]) -> str:
    """A short quoted list of leaked words for a re-ask or a reject detail."""
    return ", ".join(repr(w) for w in leaks[:10])
