"""What every hand-written step shares: its context, the update, the Linf clip and Madry's PGD on CE."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass
class Context:
    model: torch.nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]
    opt: torch.optim.Optimizer
    eps: float
    alpha: float
    steps: int
    num_samples: int
    image_shape: tuple[int, ...]
    device: torch.device
    std: torch.nn.Module | None = None  # HAT's standard network
    epoch: int = 0  # the epoch the steps belong to (warm-ups and per-epoch records read it)


def state_of(*parts) -> dict:
    """The per-sample tensors a twin keeps, under advcore's ``run.state`` names (for the test)."""
    found: dict = {}
    for part in parts:
        if hasattr(part, "state"):
            found.update(part.state())
    return found


def update(ctx: Context, loss: torch.Tensor) -> None:
    ctx.opt.zero_grad(set_to_none=True)
    loss.backward()
    ctx.opt.step()


def clip(x_adv, x, eps):
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)


def random_start(x, eps, start="uniform"):
    """Madry's x + U[-eps, eps] clipped to [0, 1], or TRADES/MART's x + 0.001 N(0, 1) (unclipped)."""
    if start == "normal":
        return x + 0.001 * torch.randn_like(x)
    return (x + (torch.rand_like(x) * 2 - 1) * eps).clamp(0, 1)


def pgd_ce(ctx: Context, x, y, eps, alpha, steps, start="uniform"):
    """Madry's PGD on CE from a uniform start (or ``start="normal"``); ``eps``/``alpha`` floats or [B, 1, 1, 1]."""
    x_adv = random_start(x, eps, start)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(ctx.forward(x_adv), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = clip(x_adv.detach() + alpha * grad.sign(), x, eps)
    return x_adv
