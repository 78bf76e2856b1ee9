"""PGD-AT (Madry et al. 2018): CE on PGD-K examples made in eval mode, or on another adversary's."""

from __future__ import annotations

import torch.nn.functional as F

from .common import Context, pgd_ce, update


def make_pgd_at(ctx: Context, adversary=None):
    """Madry's PGD-AT; with ``adversary`` (an AttaCache) that attack on CE instead of PGD-K."""
    def step(x, y, index):
        ctx.model.eval()
        if adversary is None:
            x_adv = pgd_ce(ctx, x, y, ctx.eps, ctx.alpha, ctx.steps)
        else:
            x_adv = adversary(x, index, lambda logits: F.cross_entropy(logits, y, reduction="sum"))
        ctx.model.train()
        update(ctx, F.cross_entropy(ctx.forward(x_adv), y))
    return step
