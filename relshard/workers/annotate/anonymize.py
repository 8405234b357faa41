"""The anonymization check of relational captions.

A relational caption must write every entity as its placeholder (``{S1} hands
{A3} to {S2}``). It *leaks* when, outside the placeholders, it still contains a
content word of an attribute's text (``{S1} hands the red cup to {S2}``) or a name
the model gave a subject; and a relation whose predicate holds an attribute's
content word (``wears_red_scarf``) is a leak too.

Words are compared case-insensitively, as whole words and by stem
(:mod:`relshard.workers.annotate.stems`: ``Scarves.`` matches ``scarf``), never
fuzzily (``reddish`` is not ``red``). Short words, function words and the words of
the relation vocabulary (``wears``, ``holds``, ``left of``: see
:mod:`relshard.workers.annotate.predicates`) are not content words; a sample's
own predicates whitelist nothing else, so a model cannot carry an attribute word
past the check by naming it in a predicate. A name leaks when its words appear in
the caption in a row, compared by stem (articles aside: ``the chefs`` ~ ``a chef``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from relshard.record import PLACEHOLDER_RE
from relshard.workers.annotate.predicates import ARTICLES, DEFAULT_VOCABULARY
from relshard.workers.annotate.stems import stem, stem_keys

_WORD = re.compile(r"[a-z0-9]+")
MIN_WORD = 3
STOPWORDS = frozenset({
    "a", "an", "the", "and", "or", "of", "on", "in", "at", "to", "for", "with", "from", "by",
    "into", "onto", "over", "under", "near", "next", "his", "her", "their", "its", "this", "that",
    "these", "those", "some", "one", "two", "three", "other", "another", "each", "left", "right",
    "front", "behind", "side", "top", "bottom", "upper", "lower", "body", "part", "parts", "is",
    "are", "was", "were", "be", "being", "been", "has", "have", "having", "wears", "wearing",
    "holds", "holding", "while", "who", "which", "also", "both", "them", "they", "he", "she",
    "him", "it", "then", "there", "here", "not", "but",
})
STOP_STEMS = frozenset(stem(w) for w in STOPWORDS)
#: Stems that are never content words: function words and the default relation vocabulary.
#: Only the curated default vocabulary counts: a spec's ``extra`` predicates (``wears_hat``)
#: must not turn attribute words into function words.
RELATION_STEMS = STOP_STEMS | DEFAULT_VOCABULARY.stems


def words(text: str) -> list[str]:
    """The lowercase words of ``text`` (letters and digits; hyphens and apostrophes split)."""
    return _WORD.findall(text.lower())


def content_words(text: str, ignore: frozenset[str] = RELATION_STEMS) -> set[str]:
    """Words of ``text`` that identify an entity: long enough, not function or relation words."""
    return {w for w in words(text) if len(w) >= MIN_WORD and not stem_keys(w) & ignore}


def _stems_of(ws: Iterable[str]) -> set[str]:
    out: set[str] = set()
    for w in ws:
        out |= stem_keys(w)
    return out


def _name_leaks(name: str, caption_words: list[str]) -> bool:
    """Whether the words of ``name`` appear in the caption in a row (by stem, articles aside)."""
    target = [w for w in words(name) if w not in ARTICLES]
    if not target:
        return False
    keys = [stem_keys(w) for w in caption_words if w not in ARTICLES]
    n = len(target)
    return any(all(stem_keys(t) & keys[i + j] for j, t in enumerate(target))
               for i in range(len(keys) - n + 1))


def find_leaks(relational_caption: str, attributes: Iterable[dict[str, Any]],
               names: Iterable[str] = (), predicates: Iterable[str] = ()) -> list[str]:
    """What a relational caption reveals: attribute words and subject names it still holds.

    The caption's own words are reported as written (``scarves``); a predicate that
    holds an attribute word is reported as ``predicate NAME``. ``predicates`` are the
    sample's relation predicates (normalized); they are checked, never whitelisted.
    """
    caption_words = words(PLACEHOLDER_RE.sub(" ", relational_caption))
    leaks: list[str] = []
    for name in names:
        name = name.strip()
        if name and _name_leaks(name, caption_words):
            leaks.append(name)
    attr_stems: set[str] = set()
    for attr in attributes:
        stems = _stems_of(content_words(str(attr.get("text") or "")))
        attr_stems |= stems
        hit = sorted({w for w in caption_words if len(w) >= MIN_WORD and stem_keys(w) & stems})
        leaks += [w for w in hit if w not in leaks]
    for predicate in dict.fromkeys(predicates):
        tokens = [t for t in predicate.lower().split("_") if len(t) >= MIN_WORD]
        if any(stem_keys(t) & attr_stems for t in tokens if not stem_keys(t) & RELATION_STEMS):
            label = f"predicate {predicate}"
            if label not in leaks:
                leaks.append(label)
    return leaks


def leak_message(leaks: list[str]) -> str:
    """A short quoted list of leaked words for a re-ask or a reject detail."""
    return ", ".join(repr(w) for w in leaks[:10])
