"""DICAR (Def. 4): the prediction at a mix of the two views' adversarial examples should match
the same mix of the two views' clean predictions, measured by a Jensen-Shannon divergence.

Two forms, chosen by the ``dicar`` option:

* ``"code"`` (authors' code, the default): one weight per batch, m = max(l, 1 - l) with
  l ~ Beta(gamma, gamma); the clean *logits* are mixed; both sides use softmax(z / T), T = 0.5.
* ``"paper"`` (Eq. 15-16, Table 4): a weight beta_i ~ Beta(gamma, gamma) per sample; the clean
  *probabilities* are mixed; no temperature (T = 1).
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F

from advcore.losses import js_divergence


def step_generator(seed: int, global_step: int, rank: int = 0) -> torch.Generator:
    """A CPU generator that depends only on the run's seed, the update counter and the rank.

    Resuming a run or re-evaluating the loss inside one step (AWP) draws the same weights.
    """
    digest = hashlib.blake2b(f"{seed}:{global_step}:{rank}:raat-dicar".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))


def sample_beta(n: int, gamma: float, generator: torch.Generator) -> torch.Tensor:
    """n draws from Beta(gamma, gamma) as G1 / (G1 + G2) with G ~ Gamma(gamma, 1).

    ``torch.distributions.Beta`` takes no generator; ``torch._standard_gamma`` (what it uses
    inside) does, so the draws follow the run's seed and not the global RNG.
    """
    conc = torch.full((2, n), float(gamma), dtype=torch.float64)
    g = torch._standard_gamma(conc, generator=generator)
    return (g[0] / (g[0] + g[1])).float()


def mixing_weights(n: int, gamma: float, form: str, generator: torch.Generator) -> torch.Tensor:
    """[n] weights on the first view: per sample (paper) or one max(l, 1 - l) shared (code)."""
    if form == "paper":
        return sample_beta(n, gamma, generator)
    lam = sample_beta(1, gamma, generator)
    return torch.maximum(lam, 1 - lam).expand(n).clone()


def dicar_js(logits_mixed_adv: torch.Tensor, logits_clean_1: torch.Tensor, logits_clean_2: torch.Tensor,
             weight: torch.Tensor, form: str, temperature: float) -> torch.Tensor:
    """Per-pair JS between p(mix of adversarial views) and the mixed clean prediction [n].

    ``weight`` [n] multiplies the first view. Nothing is detached: the mixed clean prediction
    is a live target, as in the authors' code.
    """
    w = weight.to(logits_mixed_adv)[:, None]
    p_adv = F.softmax(logits_mixed_adv / temperature, dim=1)
    if form == "paper":
        p_clean = w * F.softmax(logits_clean_1 / temperature, dim=1) + (1 - w) * F.softmax(logits_clean_2 / temperature, dim=1)
    else:
        p_clean = F.softmax((w * logits_clean_1 + (1 - w) * logits_clean_2) / temperature, dim=1)
    return js_divergence(p_adv, p_clean)
