"""Records to tensors for the binding model: hashed n-gram text, geometry, targets.

Runs in DataLoader workers as the stream's ``collate_fn``: each record's
subjects and attributes become tokens. Text (a subject's kind, an attribute's
text and category) becomes up to ``max_ngrams`` hashed word and character
3-gram ids (``zlib.crc32``, stable across processes and runs; 0 is padding).
Geometry is the bbox (x0, y0, x1, y1), the frame and a has-bbox flag. The
target of each attribute is the index of the subject it is bound to (from the
record's relations), or -100 when it is unbound.
"""

from __future__ import annotations

import zlib
from typing import Any

import torch

from relshard.builders.metrics import gold_bindings

GEO = 6


def ngram_ids(text: str, buckets: int, max_ngrams: int) -> list[int]:
    """Hashed word and character-trigram ids of ``text`` in ``[1, buckets)``."""
    text = text.lower().strip()
    grams = [f"w:{w}" for w in text.split()]
    padded = f" {text} "
    grams += [f"c:{padded[i:i + 3]}" for i in range(max(len(padded) - 2, 0))]
    return [1 + zlib.crc32(g.encode()) % (buckets - 1) for g in grams[:max_ngrams]]


def _geo(item: dict[str, Any]) -> list[float]:
    box = item.get("bbox")
    frame = float(item.get("frame") or 0)
    if not box:
        return [0.0, 0.0, 0.0, 0.0, frame / 10, 0.0]
    return [float(v) for v in box] + [frame / 10, 1.0]


class BindingCollate:
    """``collate_fn`` for ShardStream: a batch of records to padded binding tensors."""

    def __init__(self, buckets: int = 4096, max_ngrams: int = 24) -> None:
        self.buckets = buckets
        self.max_ngrams = max_ngrams

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        records = [s["json"] for s in samples if isinstance(s.get("json"), dict)]
        n = len(records)
        s_max = max([len(r.get("subjects", [])) for r in records] + [1])
        a_max = max([len(r.get("attributes", [])) for r in records] + [1])
        k = self.max_ngrams
        out: dict[str, Any] = {
            "subj_text": torch.zeros(n, s_max, k, dtype=torch.long),
            "subj_geo": torch.zeros(n, s_max, GEO),
            "subj_mask": torch.zeros(n, s_max, dtype=torch.bool),
            "attr_text": torch.zeros(n, a_max, k, dtype=torch.long),
            "attr_geo": torch.zeros(n, a_max, GEO),
            "attr_mask": torch.zeros(n, a_max, dtype=torch.bool),
            "target": torch.full((n, a_max), -100, dtype=torch.long),
        }
        for b, rec in enumerate(records):
            subjects = rec.get("subjects", [])
            index = {s["id"]: i for i, s in enumerate(subjects)}
            for i, subj in enumerate(subjects):
                ids = ngram_ids(str(subj.get("kind", "subject")), self.buckets, k)
                out["subj_text"][b, i, :len(ids)] = torch.tensor(ids)
                out["subj_geo"][b, i] = torch.tensor(_geo(subj))
                out["subj_mask"][b, i] = True
            bound = gold_bindings(rec)
            for j, attr in enumerate(rec.get("attributes", [])):
                text = f"{attr.get('text', '')} {attr.get('category', '')}"
                ids = ngram_ids(text, self.buckets, k)
                out["attr_text"][b, j, :len(ids)] = torch.tensor(ids)
                out["attr_geo"][b, j] = torch.tensor(_geo(attr))
                out["attr_mask"][b, j] = True
                if bound.get(attr["id"]) in index:
                    out["target"][b, j] = index[bound[attr["id"]]]
        out["keys"] = [r.get("key") for r in records]
        out["records"] = records
        return out
