"""PGD-AT (Madry et al. 2018): CE on PGD-K examples made in eval mode, or on another adversary's."""

from __future__ import annotations

import torch.nn.functional as F

from .common import Context, pgd_ce, state_of, update


def ce_examples(ctx: Context, x, y, index, adversary=None):
    """The examples PGD-AT trains on, made in eval mode: PGD-K on CE, or ``adversary`` maximising CE."""
    ctx.model.eval()
    if adversary is None:
        return pgd_ce(ctx, x, y, ctx.eps, ctx.alpha, ctx.steps)
    return adversary(x, y, index, lambda logits: F.cross_entropy(logits, y, reduction="sum"))


def make_pgd_at(ctx: Context, adversary=None, apply=None):
    """Madry's PGD-AT; with ``adversary`` (ATTA's cache, FGSM-RS, FAT's early-stopped PGD) that
    attack on CE instead of PGD-K; ``apply(loss_at)`` takes the update (default: one SGD step on
    ``loss_at(ctx.forward)``; AWP's is taken at perturbed weights)."""
    apply = apply or (lambda loss_at: update(ctx, loss_at(ctx.forward)))

    def step(x, y, index):
        x_adv = ce_examples(ctx, x, y, index, adversary)
        ctx.model.train()
        apply(lambda forward: F.cross_entropy(forward(x_adv), y))
    step.state = lambda: state_of(adversary)
    return step
