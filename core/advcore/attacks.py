"""Linf attack primitives shared by adversary plugins and evaluation.

Budgets are per-sample tensors [B]; inputs live in [0, 1]. Gradients are taken with
respect to the input only, so no parameter gradient is computed or accumulated.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F

__all__ = ["model_mode", "set_mode", "as_budget", "random_start", "project", "input_gradient", "pgd",
           "ce_loss", "cw_loss", "pgd_eval"]

LossFn = Callable[[torch.Tensor, Any], torch.Tensor]


@contextmanager
def model_mode(model: torch.nn.Module, mode: str) -> Iterator[None]:
    """Run a block with the model in "train" or "eval" mode, then restore the old mode."""
    was_training = model.training
    set_mode(model, mode == "train")
    try:
        yield
    finally:
        set_mode(model, was_training)


def set_mode(model: torch.nn.Module, training: bool) -> None:
    """``model.train(training)``, skipped when every submodule is in that mode already.

    ``Module.train()`` sets the flag on each submodule through ``__setattr__``; checking
    the flags costs a quarter of that, and a step switches modes several times.
    """
    if any(m.training != training for m in model.modules()):
        model.train(training)


def as_budget(value: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-sample budget broadcastable against ``x`` ([B, 1, 1, 1])."""
    if not isinstance(value, torch.Tensor):
        value = torch.full((x.shape[0],), float(value), device=x.device)
    return value.to(device=x.device, dtype=x.dtype).view(-1, *([1] * (x.dim() - 1)))


def random_start(x: torch.Tensor, eps: torch.Tensor, init: str) -> torch.Tensor:
    """Madry's uniform start (clipped to [0, 1]) or TRADES' x + 0.001 N(0, 1) (unclipped)."""
    if init == "uniform":
        e = as_budget(eps, x)
        return (x + (torch.rand_like(x) * 2 - 1) * e).clamp(0, 1)
    if init == "normal":
        return x + 0.001 * torch.randn_like(x)
    return x.clone()


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Project onto the per-sample Linf ball around ``x`` intersected with [0, 1]."""
    e = as_budget(eps, x)
    return torch.max(torch.min(x_adv, x + e), x - e).clamp(0, 1)


def input_gradient(model: torch.nn.Module, x_adv: torch.Tensor, target: Any, loss_fn: LossFn) -> tuple[torch.Tensor, torch.Tensor]:
    """(d sum_i loss_i / d x_adv, logits) without touching parameter gradients."""
    x_adv = x_adv.detach().requires_grad_(True)
    logits = model(x_adv)
    loss = loss_fn(logits, target).sum()
    (grad,) = torch.autograd.grad(loss, x_adv)
    return grad, logits.detach()


def pgd(model: torch.nn.Module, x: torch.Tensor, target: Any, loss_fn: LossFn, *, eps: torch.Tensor,
        step_size: torch.Tensor, steps: int, init: str = "uniform") -> torch.Tensor:
    """K signed-gradient ascent steps, each projected to the per-sample budget.

    The projection's bounds max(x - eps, 0) and min(x + eps, 1) are computed once: one clamp
    per step gives exactly ``project``'s result (the two intervals share x).
    """
    alpha = as_budget(step_size, x)
    e = as_budget(eps, x)
    lo, hi = (x - e).clamp_(min=0), (x + e).clamp_(max=1)
    x_adv = random_start(x, eps, init)
    if steps == 0:
        return project(x_adv, x, eps).detach()
    for _ in range(steps):
        grad, _ = input_gradient(model, x_adv, target, loss_fn)
        x_adv = (x_adv.detach() + alpha * grad.sign_()).clamp_(lo, hi)
    return x_adv


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def cw_loss(logits: torch.Tensor, y: torch.Tensor, kappa: float = 50.0) -> torch.Tensor:
    """Carlini-Wagner margin: best wrong logit minus the true logit (clamped at -kappa)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    wrong = logits.clone()
    wrong.scatter_(1, y[:, None], float("-inf"))
    return (wrong.max(dim=1).values - true).clamp(min=-kappa)


def pgd_eval(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step_size: float,
             steps: int, restarts: int = 1, loss: str = "ce") -> torch.Tensor:
    """Evaluation PGD with restarts: a sample counts as broken if any restart breaks it.

    Returns the adversarial batch (for broken samples, the first breaking restart's example).
    """
    loss_fn = cw_loss if loss == "cw" else ce_loss
    e = torch.full((x.shape[0],), float(eps), device=x.device)
    a = torch.full_like(e, float(step_size))
    best = x.clone()
    alive = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    for _ in range(restarts):
        if not alive.any():
            break
        idx = alive.nonzero().squeeze(1)
        adv = pgd(model, x[idx], y[idx], loss_fn, eps=e[idx], step_size=a[idx], steps=steps, init="uniform")
        with torch.no_grad():
            broken = model(adv).argmax(1) != y[idx]
        best[idx] = adv
        alive[idx[broken]] = False
    return best
