"""Per-sample divergences shared by objectives (each returns a tensor [B])."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["kl_from_logits", "kl_to_probs", "js_divergence"]


def kl_to_probs(p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(p || softmax(logits_q)) per sample, p given as probabilities (0 log 0 = 0)."""
    log_q = F.log_softmax(logits_q, dim=1)
    return (torch.xlogy(p, p) - p * log_q).sum(dim=1)


def kl_from_logits(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(softmax(logits_p) || softmax(logits_q)) per sample; gradients flow into both."""
    log_p = F.log_softmax(logits_p, dim=1)
    return (log_p.exp() * (log_p - F.log_softmax(logits_q, dim=1))).sum(dim=1)


def js_divergence(p: torch.Tensor, q: torch.Tensor, floor: float = 1e-8) -> torch.Tensor:
    """Jensen-Shannon divergence per sample between probability vectors p and q.

    p log p is taken as p log max(p, tiny): the same value, but a probability that underflowed
    to exactly 0 (a confident softmax) gets a finite gradient instead of NaN (xlogy's 0 * -inf).
    """
    m = (0.5 * (p + q)).clamp_min(floor)

    def plogp(v: torch.Tensor) -> torch.Tensor:
        return v * v.clamp_min(torch.finfo(v.dtype).tiny).log()

    return 0.5 * ((plogp(p) - p * m.log()).sum(1) + (plogp(q) - q * m.log()).sum(1))
