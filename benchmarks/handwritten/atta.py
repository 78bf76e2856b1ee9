"""ATTA (Zheng et al. 2020, fast-atta): one signed step from each sample's cached perturbation."""

from __future__ import annotations

import torch

from .common import Context, clip


class AttaCache:
    """ATTA: per-sample perturbations kept across visits (first visit U[-eps, eps]), no augmentation."""

    def __init__(self, ctx: Context, alpha_ratio: float = 0.5):
        self.ctx, self.alpha = ctx, alpha_ratio * ctx.eps
        self.delta = torch.zeros(ctx.num_samples, *ctx.image_shape, device=ctx.device)
        self.visited = torch.zeros(ctx.num_samples, dtype=torch.bool, device=ctx.device)

    def state(self) -> dict:
        return {"fast-atta.delta": self.delta, "fast-atta.visited": self.visited}

    def __call__(self, x, y, index, loss_of):
        """One signed step on ``loss_of(logits)`` from the cached start, stored back (``y`` unused)."""
        d = self.delta[index]
        new = ~self.visited[index]
        d[new] = (torch.rand_like(d[new]) * 2 - 1) * self.ctx.eps
        start = (x + d).requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_of(self.ctx.forward(start)), start)
        x_adv = clip(start.detach() + self.alpha * grad.sign(), x, self.ctx.eps)
        self.delta[index] = x_adv - x
        self.visited[index] = True
        return x_adv
