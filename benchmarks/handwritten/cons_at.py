"""Cons-AT (Tack et al. 2022, RAAT's Table 4 baseline): CE on both views' adversarial examples
plus lam * JS between the two views' predictions at temperature T (the code's 0.5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import Context, pgd_ce, update
from .raat import js


def make_cons_at(ctx: Context, lam: float = 1.0, temperature: float = 0.5):
    def step(x, y, index):
        b = x.shape[0]
        x2, y2 = torch.cat([x, x]), torch.cat([y, y])  # two views; the benchmark does not augment
        ctx.model.eval()
        x_adv = pgd_ce(ctx, x2, y2, ctx.eps, ctx.alpha, ctx.steps)
        ctx.model.train()
        logits = ctx.forward(x_adv)
        p1, p2 = F.softmax(logits[:b] / temperature, 1), F.softmax(logits[b:] / temperature, 1)
        update(ctx, F.cross_entropy(logits, y2) + lam * js(p1, p2).mean())
    return step
