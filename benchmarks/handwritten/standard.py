"""Standard training: CE on the clean batch in train mode, no attack."""

from __future__ import annotations

import torch.nn.functional as F

from .common import Context, update


def make_standard(ctx: Context):
    def step(x, y, index):
        ctx.model.train()
        update(ctx, F.cross_entropy(ctx.forward(x), y))
    return step
