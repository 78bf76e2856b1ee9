"""HE (Pang et al. 2020): a bias-free cosine head s * W_hat z_hat, the angular margin m in the training CE only."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import Context, pgd_ce, update


class CosineHead(torch.nn.Module):
    """s * cos(theta): features normalised in the graph (FN); the class rows are put on the unit
    sphere outside autograd (WN) by ``project``, once per step as the weights change only at the update."""

    def __init__(self, weight: torch.nn.Parameter, s: float):
        super().__init__()
        self.weight, self.s = weight, s  # the old head's weight (the optimizer holds it), its bias dropped

    def project(self) -> None:
        with torch.no_grad():
            self.weight.div_(self.weight.norm(dim=1, keepdim=True))

    def forward(self, z):
        return self.s * F.linear(F.normalize(z, dim=1), self.weight)


def make_he(ctx: Context, s: float = 15.0, m: float = 0.2):
    """PGD-AT + HE: the attack sees s cos(theta) without margin; the update's CE subtracts s m at the true class."""
    head = ctx.model.head = CosineHead(ctx.model.head.weight, s)

    def step(x, y, index):
        head.project()
        ctx.model.eval()
        x_adv = pgd_ce(ctx, x, y, ctx.eps, ctx.alpha, ctx.steps)
        ctx.model.train()
        logits = ctx.forward(x_adv)
        update(ctx, F.cross_entropy(logits - s * m * F.one_hot(y, logits.shape[1]), y))
    return step
