"""``relshard show OUT``: a self-contained HTML gallery of samples, read through the index.

- :func:`build_gallery` (:mod:`.build`) picks samples (seeded, ``--where`` filters on
  index columns first, then on records with a scan cap), reads only their byte
  ranges (:mod:`.sample_reader`) and renders one HTML file (:mod:`.page`,
  :mod:`.card`, :mod:`.timeline` for event windows), with the rejects ledger
  summarized (:mod:`.rejects`);
- :func:`read_sample` reads one sample's members by byte range, validating every
  tar header against the range;
- :func:`parse_where` parses one ``FIELD OP VALUE`` filter (:mod:`.where`).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "GalleryOptions": "relshard.report.gallery.build",
    "GalleryResult": "relshard.report.gallery.build",
    "build_gallery": "relshard.report.gallery.build",
    "sample_strip": "relshard.report.gallery.build",
    "read_sample": "relshard.report.gallery.sample_reader",
    "SampleBytes": "relshard.report.gallery.sample_reader",
    "parse_where": "relshard.report.gallery.where",
    "WhereError": "relshard.report.gallery.where",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'relshard.report.gallery' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
