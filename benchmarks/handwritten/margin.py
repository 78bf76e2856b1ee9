"""Objectives that add a margin or pairing term to the adversarial CE: MART (Wang et al. 2020)
and ALP (Kannan et al. 2018, in the HE paper's Table 1 form)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import Context, pgd_ce, update


def mart_terms(logits_train, logits_attack, logits_clean, y, beta: float = 6.0):
    """MART's loss, batch mean: CE(f(x'), y) - log(1.0001 - max_{k != y} q_k + 1e-12) on the trained-on
    example, plus beta * KL(p(x) || q(x')) * (1.0000001 - p_y(x)) on the adversary's own output
    (the two differ only under RAAT, which rebuilds rows of the first). Nothing is detached."""
    true = F.one_hot(y, logits_train.shape[1]).bool()
    q_train = F.softmax(logits_train, 1)
    q_wrong = q_train.masked_fill(true, 0).max(1).values  # probabilities are > 0: the top wrong class
    bce = F.cross_entropy(logits_train, y, reduction="none") - torch.log(1.0001 - q_wrong + 1e-12)
    p, q = F.softmax(logits_clean, 1), F.softmax(logits_attack, 1)
    kl = (p * (torch.log(p + 1e-12) - torch.log(q + 1e-12))).sum(1)
    return bce.mean() + beta * (kl * (1.0000001 - p[true])).mean()


def make_mart(ctx: Context, beta: float = 6.0):
    """MART: CE attack in eval mode from x + 0.001 N(0, 1), then MART's loss in train mode."""
    def step(x, y, index):
        ctx.model.eval()
        x_adv = pgd_ce(ctx, x, y, ctx.eps, ctx.alpha, ctx.steps, start="normal")
        ctx.model.train()
        logits_adv = ctx.forward(x_adv)
        update(ctx, mart_terms(logits_adv, logits_adv, ctx.forward(x), y, beta))
    return step


def make_alp(ctx: Context, beta: float = 0.5):
    """ALP: Madry's PGD, then 0.5 CE(clean) + 0.5 CE(adv) + beta * mean_k (f(x)_k - f(x')_k)^2."""
    def step(x, y, index):
        ctx.model.eval()
        x_adv = pgd_ce(ctx, x, y, ctx.eps, ctx.alpha, ctx.steps)
        ctx.model.train()
        logits, logits_adv = ctx.forward(x), ctx.forward(x_adv)
        pairing = (logits - logits_adv).pow(2).mean(1).mean()
        update(ctx, 0.5 * F.cross_entropy(logits, y) + 0.5 * F.cross_entropy(logits_adv, y) + beta * pairing)
    return step
