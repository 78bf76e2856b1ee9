"""Free AT (Shafahi et al. 2019): m replays of each batch; the update's backward also gives
the input gradient, and the perturbation carries over to the next batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import Context, clip


def make_free(ctx: Context, replays: int = 8):
    delta: torch.Tensor | None = None

    def step(x, y, index):
        nonlocal delta
        if delta is None or delta.shape != x.shape:
            delta = torch.zeros_like(x)
        ctx.model.train()
        for _ in range(replays):
            x_adv = clip(x + delta, x, ctx.eps).requires_grad_(True)
            loss = F.cross_entropy(ctx.forward(x_adv), y)
            ctx.opt.zero_grad(set_to_none=True)
            loss.backward()
            ctx.opt.step()
            delta = clip(x_adv.detach() + ctx.eps * x_adv.grad.sign(), x, ctx.eps) - x
    return step
