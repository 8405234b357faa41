"""A self-attentive Hawkes process (SAHP, Zhang et al. 2020) for event-window shards.

Each window (``KEY.times.npy`` float64 seconds, ``KEY.types.npy`` int64 type ids)
is a sequence of events. Events are embedded (type embedding + sinusoidal
encoding of the time since the window's first event, in ``time_scale``
seconds), a causal transformer encodes the history, and from the hidden state
``h_i`` after event ``i`` every type ``k`` gets an intensity that decays or
grows from ``eta_k`` towards ``mu_k`` with rate ``gamma_k``:

    lambda_k(t) = softplus(mu_k + (eta_k - mu_k) * exp(-gamma_k * (t - t_i))),  t in (t_i, t_i+1]

The log-likelihood of a window is ``sum_i log lambda_{k_i+1}(t_i+1)`` minus the
integral of the total intensity between events (a deterministic midpoint rule
with ``integration_points`` points per interval). The next type is predicted as
the type of highest intensity at the next event time; a small head predicts the
next inter-event time (trained on ``log1p``).

:class:`EventCollate` does **length bucketing**: a stream batch is sorted by
length and cut into buckets of at most ``max_tokens`` padded events, each padded
only to its own longest window (rounded up to a multiple of 8), not to the
global maximum.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn
from torch.nn import functional as F


class HawkesConfig(BaseModel):
    """Sizes and options of the Hawkes model."""

    model_config = ConfigDict(extra="forbid")

    num_types: int = 16
    dim: int = 32
    heads: int = 4
    layers: int = 2
    time_scale: float = 1.0
    integration_points: int = 8
    max_tokens: int = 4096
    time_weight: float = 0.1


class EventCollate:
    """``collate_fn``: event windows to length buckets of padded tensors."""

    def __init__(self, cfg: HawkesConfig) -> None:
        self.cfg = cfg

    def _bucket(self, seqs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, torch.Tensor]:
        width = -(-max(len(t) for t, _ in seqs) // 8) * 8
        n = len(seqs)
        types = torch.zeros(n, width, dtype=torch.long)
        times = torch.zeros(n, width)
        mask = torch.zeros(n, width, dtype=torch.bool)
        for b, (t, k) in enumerate(seqs):
            rel = (t - t[0]) / self.cfg.time_scale
            types[b, :len(k)] = torch.from_numpy(np.clip(k, 0, self.cfg.num_types - 1) + 1)
            times[b, :len(t)] = torch.from_numpy(rel.astype(np.float32))
            mask[b, :len(t)] = True
        return {"types": types, "times": times, "mask": mask}

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        seqs: list[tuple[np.ndarray, np.ndarray]] = []
        for s in samples:
            if s.get("__pad__"):  # a repeat that only fills the last batch (remainder="pad")
                continue
            t, k = s.get("times.npy"), s.get("types.npy")
            if isinstance(t, np.ndarray) and isinstance(k, np.ndarray) and len(t) == len(k) >= 2:
                order = np.argsort(t, kind="stable")
                seqs.append((t[order].astype(np.float64), k[order].astype(np.int64)))
        seqs.sort(key=lambda s: len(s[0]))
        buckets: list[dict[str, torch.Tensor]] = []
        current: list[tuple[np.ndarray, np.ndarray]] = []
        for seq in seqs:
            width = -(-len(seq[0]) // 8) * 8
            if current and width * (len(current) + 1) > self.cfg.max_tokens:
                buckets.append(self._bucket(current))
                current = []
            current.append(seq)
        if current:
            buckets.append(self._bucket(current))
        return {"buckets": buckets, "windows": len(seqs)}


def time_encoding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal encoding of (continuous) times ``[B, L]`` to ``[B, L, dim]``."""
    freq = torch.exp(torch.arange(0, dim, 2, device=t.device) * (-math.log(10000.0) / dim))
    angles = t[..., None] * freq
    return torch.cat([angles.sin(), angles.cos()], dim=-1)[..., :dim]


class HawkesModel(nn.Module):
    """Self-attentive Hawkes process over length buckets."""

    def __init__(self, cfg: HawkesConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.embed = nn.Embedding(cfg.num_types + 1, d, padding_idx=0)
        layer = nn.TransformerEncoderLayer(d, cfg.heads, 4 * d, 0.0, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.params = nn.Linear(d, 3 * cfg.num_types)  # mu, eta, gamma per type
        self.next_time = nn.Linear(d, 1)

    def _intensity(self, h: torch.Tensor, elapsed: torch.Tensor) -> torch.Tensor:
        """``[B, L, P, K]`` intensities at ``elapsed`` ``[B, L, P]`` after each event."""
        mu, eta, gamma = self.params(h).chunk(3, dim=-1)
        gamma = F.softplus(gamma)
        decay = torch.exp(-gamma[:, :, None, :] * elapsed[..., None])
        return F.softplus(mu[:, :, None, :] + (eta - mu)[:, :, None, :] * decay) + 1e-6

    def bucket_rows(self, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per window (row) of a bucket: log-likelihood, events, correct types, time error."""
        types, times, mask = b["types"], b["times"], b["mask"]
        length = types.shape[1]
        x = self.embed(types) + time_encoding(times, self.cfg.dim)
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=x.device), 1)
        h = self.encoder(x, mask=causal, src_key_padding_mask=~mask)
        h, nxt = h[:, :-1], mask[:, 1:]  # history up to event i predicts event i + 1
        dt = (times[:, 1:] - times[:, :-1]).clamp(min=0) * nxt
        at_next = self._intensity(h, dt[..., None])[:, :, 0]  # [B, L-1, K]
        target = (types[:, 1:] - 1).clamp(min=0)
        log_event = torch.log(at_next.gather(-1, target[..., None]).squeeze(-1))
        m = self.cfg.integration_points
        frac = (torch.arange(m, device=x.device) + 0.5) / m
        mids = self._intensity(h, dt[..., None] * frac).sum(-1).mean(-1) * dt
        ll = ((log_event - mids) * nxt).sum(1)
        correct = ((at_next.argmax(-1) == target) & nxt).sum(1)
        pred_dt = F.softplus(self.next_time(h).squeeze(-1))
        time_err = (((torch.log1p(pred_dt) - torch.log1p(dt)) ** 2) * nxt).sum(1)
        return {"ll": ll, "events": nxt.sum(1), "correct": correct, "time_err": time_err}

    def bucket_terms(self, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Log-likelihood sum, event count, correct next types and time error of a bucket."""
        return {name: value.sum() for name, value in self.bucket_rows(b).items()}

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Sums of the bucket terms over all buckets of a batch (one call, DDP-friendly)."""
        zero = self.next_time.weight.sum() * 0.0
        total = {"ll": zero, "events": zero.detach(), "correct": zero.detach(),
                 "time_err": zero}
        for bucket in batch["buckets"]:
            for name, value in self.bucket_terms(bucket).items():
                total[name] = total[name] + value
        return total

    def objective(self, out: dict[str, torch.Tensor], batch: dict[str, Any]
                  ) -> tuple[torch.Tensor, dict[str, float]]:
        """Negative log-likelihood per event (+ the time loss) and the type accuracy."""
        n = out["events"].clamp(min=1)
        loss = -out["ll"] / n + self.cfg.time_weight * out["time_err"] / n
        return loss, {"acc": float(out["correct"] / n), "n": float(out["events"]),
                      "nll": float(-out["ll"].detach() / n)}
