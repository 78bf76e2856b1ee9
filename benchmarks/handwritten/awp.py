"""AWP (Wu, Xia & Wang 2020): the update is taken at weights pushed uphill, layer by layer, on
the objective's own loss, and the push is removed afterwards."""

from __future__ import annotations

import copy

import torch

from .common import Context, update


class WeightPerturbation:
    """``apply(loss_at)`` for any objective: ``loss_at(forward)`` is the objective's training loss.

    A proxy copy (its own BatchNorm statistics) gives g = d loss / d w at the current weights;
    each conv/linear weight moves by gamma ||w|| g / ||g||, the SGD step (momentum, weight decay)
    is taken there, and the same shift is subtracted."""

    def __init__(self, ctx: Context, gamma: float = 0.01, warmup: int = 0):
        self.ctx, self.gamma, self.warmup = ctx, gamma, warmup
        self.proxy = copy.deepcopy(ctx.model)

    def __call__(self, loss_at):
        ctx = self.ctx
        if ctx.epoch < self.warmup:
            update(ctx, loss_at(ctx.forward))
            return
        self.proxy.load_state_dict(ctx.model.state_dict())
        self.proxy.train()
        names, weights = zip(*[(n, p) for n, p in self.proxy.named_parameters() if p.dim() > 1 and "weight" in n])
        grads = torch.autograd.grad(loss_at(self.proxy), weights, allow_unused=True)
        params = dict(ctx.model.named_parameters())
        v = {n: (w.detach().norm() / (g.norm() + 1e-20)) * g for n, w, g in zip(names, weights, grads) if g is not None}
        with torch.no_grad():
            for n, d in v.items():
                params[n].add_(d, alpha=self.gamma)
        update(ctx, loss_at(ctx.forward))
        with torch.no_grad():
            for n, d in v.items():
                params[n].add_(d, alpha=-self.gamma)
