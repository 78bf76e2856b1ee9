"""FGSM-RS (Wong, Rice & Kolter 2020, "fast is better than free"): one signed step of 1.25 eps
from a uniform start, projected back; with PGD-AT's CE it is their FastAT."""

from __future__ import annotations

import torch

from .common import Context, clip


def fgsm_rs(ctx: Context, alpha_ratio: float = 1.25):
    """The adversary ``(x, y, index, loss_of) -> x_adv`` (always the uniform start; keeps nothing)."""
    def adversary(x, y, index, loss_of):
        start = (x + (torch.rand_like(x) * 2 - 1) * ctx.eps).clamp(0, 1).requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_of(ctx.forward(start)), start)
        return clip(start.detach() + alpha_ratio * ctx.eps * grad.sign(), x, ctx.eps)
    return adversary
