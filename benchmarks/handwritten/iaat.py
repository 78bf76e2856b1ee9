"""IAAT: per-sample radii searched each visit (after warm-up), then PGD-AT at the new radii."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import Context, pgd_ce, update


def make_iaat(ctx: Context, gamma: float = 1.9 / 255, beta: float = 0.1, ratio: float = 0.2):
    """IAAT after warm-up (Alg. 2): two search attacks per batch in train mode, smoothed radii,
    clean input for misclassified samples, then the PGD-AT update at the new radii."""
    radius = torch.full((ctx.num_samples,), ctx.eps, device=ctx.device)

    def survives(x, y, eps):
        e = eps.view(-1, 1, 1, 1)
        adv = pgd_ce(ctx, x, y, e, torch.clamp(e * ratio, min=ctx.alpha), ctx.steps)
        with torch.no_grad():
            return ctx.forward(adv).argmax(1) == y

    def step(x, y, index):
        ctx.model.train()
        with torch.no_grad():
            correct = ctx.forward(x).argmax(1) == y
        prev = radius[index]
        up, keep = survives(x, y, prev + gamma), survives(x, y, prev)
        picked = torch.where(up, prev + gamma, torch.where(keep, prev, prev - gamma)).clamp_min(0)
        new = (beta * picked + (1 - beta) * prev).clamp_min(0)
        radius[index] = new
        e = (new * correct).view(-1, 1, 1, 1)
        ctx.model.eval()
        x_adv = pgd_ce(ctx, x, y, e, torch.clamp(e * ratio, min=ctx.alpha), ctx.steps)
        ctx.model.train()
        update(ctx, F.cross_entropy(ctx.forward(x_adv), y))
    step.state = lambda: {"iaat.radius": radius}
    return step
