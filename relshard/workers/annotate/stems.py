"""Word stems for comparing words regardless of inflection (``scarves`` ~ ``scarf``).

The Snowball English stemmer (``snowballstemmer``, pure Python) does the regular
work (``jackets`` -> ``jacket``, ``wearing`` -> ``wear``); two small, closed tables
cover what a stemmer cannot: irregular verb forms (``held`` -> ``hold``,
``wore`` -> ``wear``) and irregular plurals (``men`` -> ``man``; ``-ves`` plurals
also try ``-f`` and ``-fe``: ``scarves`` -> ``scarf``, ``knives`` -> ``knife``).
No fuzzy matching: ``reddish`` is not ``red``.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from relshard.errors import MissingDependencyError

IRREGULAR_VERBS = {
    "held": "hold", "wore": "wear", "worn": "wear", "sat": "sit", "seated": "sit",
    "stood": "stand", "gave": "give", "given": "give", "rode": "ride", "ridden": "ride",
    "has": "have", "had": "have", "took": "take", "taken": "take", "spoke": "speak",
    "spoken": "speak", "ate": "eat", "eaten": "eat", "drank": "drink", "drunk": "drink",
    "threw": "throw", "thrown": "throw", "caught": "catch", "led": "lead", "saw": "see",
    "seen": "see", "lay": "lie", "lain": "lie", "lying": "lie", "drove": "drive",
    "driven": "drive", "kept": "keep", "leant": "lean", "met": "meet", "shook": "shake",
    "shaken": "shake", "brought": "bring", "bought": "buy", "fed": "feed", "told": "tell",
    "fought": "fight", "followed": "follow", "hung": "hang", "wove": "weave",
}
IRREGULAR_PLURALS = {
    "men": "man", "women": "woman", "children": "child", "feet": "foot", "teeth": "tooth",
    "mice": "mouse", "geese": "goose", "people": "person", "oxen": "ox", "dice": "die",
}

_local = threading.local()  # a Snowball stemmer keeps state while it stems: one per thread


def _stemmer() -> Any:
    stemmer = getattr(_local, "stemmer", None)
    if stemmer is None:
        try:
            import snowballstemmer
        except ImportError:
            raise MissingDependencyError("snowballstemmer") from None
        stemmer = _local.stemmer = snowballstemmer.stemmer("english")
    return stemmer


@functools.lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """The Snowball stem of a lowercase word, after the irregular verb and plural tables."""
    word = IRREGULAR_VERBS.get(word, IRREGULAR_PLURALS.get(word, word))
    return str(_stemmer().stemWord(word))


@functools.lru_cache(maxsize=65536)
def stem_keys(word: str) -> frozenset[str]:
    """Every stem ``word`` may stand for: its own, plus ``-f``/``-fe`` for a ``-ves`` plural."""
    keys = {stem(word)}
    if word.endswith("ves") and len(word) > 4:
        keys |= {stem(word[:-3] + "f"), stem(word[:-3] + "fe")}
    return frozenset(keys)
