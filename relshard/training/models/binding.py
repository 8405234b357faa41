"""Subject–attribute binding: relational self-attention over subject and attribute tokens.

In the spirit of LumosX's relational attention: every subject and attribute of
a sample is a token (hashed n-gram text embedding + geometry projection +
token-type embedding). **Group-aware position embeddings** number tokens within
their group (subject 1, 2...; attribute 1, 2...) and add a group embedding, so
positions carry the group structure instead of a flat sequence index. A
**relation mask** lets each token attend only to itself and to tokens of the
other group (subjects look at attributes, attributes at subjects), never to
padding. A bilinear head scores every (attribute, subject) pair; the loss is the
cross-entropy of each bound attribute over its sample's subjects.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from relshard.training.models.features import GEO


class BindingConfig(BaseModel):
    """Sizes of the binding model."""

    model_config = ConfigDict(extra="forbid")

    buckets: int = 4096
    max_ngrams: int = 24
    dim: int = 64
    heads: int = 4
    layers: int = 2
    max_group_positions: int = 32
    dropout: float = 0.0


def relation_mask(subj_mask: torch.Tensor, attr_mask: torch.Tensor) -> torch.Tensor:
    """``[B, T, T]`` True where attention is allowed: self, or across groups, no padding."""
    s, a = subj_mask.shape[1], attr_mask.shape[1]
    valid = torch.cat([subj_mask, attr_mask], dim=1)
    group = torch.cat([torch.zeros(s, dtype=torch.long), torch.ones(a, dtype=torch.long)])
    group = group.to(valid.device)
    cross = group[:, None] != group[None, :]
    allowed = (cross | torch.eye(s + a, dtype=torch.bool, device=valid.device))[None]
    return allowed & valid[:, None, :] & valid[:, :, None] | torch.eye(
        s + a, dtype=torch.bool, device=valid.device)[None]


class BindingModel(nn.Module):
    """Scores which subject each attribute belongs to."""

    def __init__(self, cfg: BindingConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.text = nn.EmbeddingBag(cfg.buckets, d, mode="mean", padding_idx=0)
        self.geo = nn.Sequential(nn.Linear(GEO, d), nn.GELU(), nn.Linear(d, d))
        self.group = nn.Embedding(2, d)
        self.position = nn.Embedding(cfg.max_group_positions, d)
        layer = nn.TransformerEncoderLayer(d, cfg.heads, 4 * d, cfg.dropout, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(d, d)

    def _tokens(self, text: torch.Tensor, geo: torch.Tensor, group: int) -> torch.Tensor:
        b, n, k = text.shape
        emb = self.text(text.reshape(b * n, k)).reshape(b, n, -1)
        pos = torch.arange(n, device=text.device).clamp(max=self.cfg.max_group_positions - 1)
        tokens: torch.Tensor = (emb + self.geo(geo) + self.group.weight[group]
                                + self.position(pos)[None])
        return tokens

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """``[B, A, S]`` logits of attribute ``a`` belonging to subject ``s`` (-inf on padding)."""
        subj = self._tokens(batch["subj_text"], batch["subj_geo"], 0)
        attr = self._tokens(batch["attr_text"], batch["attr_geo"], 1)
        s = subj.shape[1]
        allowed = relation_mask(batch["subj_mask"], batch["attr_mask"])
        mask = (~allowed).repeat_interleave(self.cfg.heads, dim=0)
        h = self.encoder(torch.cat([subj, attr], dim=1), mask=mask)
        hs, ha = h[:, :s], h[:, s:]
        logits: torch.Tensor = self.query(ha) @ self.key(hs).transpose(1, 2) / self.cfg.dim ** 0.5
        return logits.masked_fill(~batch["subj_mask"][:, None, :], float("-inf"))

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy over subjects for every bound attribute, and the batch accuracy."""
        logits = self(batch)
        target = batch["target"]
        valid = target >= 0
        if not valid.any():
            return logits.sum() * 0.0, {"n": 0.0, "acc": 0.0}
        picked = logits[valid]
        loss = nn.functional.cross_entropy(picked, target[valid])
        acc = (picked.argmax(-1) == target[valid]).float().mean().item()
        return loss, {"n": float(valid.sum()), "acc": acc}
