"""IAAT's per-sample radius search (Balaji et al., Alg. 2), as small tensor functions.

Every budget is a per-sample tensor [B]. The search asks, per sample, whether the model
still predicts the label after a PGD attack at eps + gamma and at eps, and moves the
radius up, keeps it or moves it down; the result is smoothed with the stored radius.
"""

from __future__ import annotations

import torch

from advcore.attacks import ce_loss, pgd

__all__ = ["attack_step_size", "predicts_label", "survives_attack", "choose_radius", "smooth_radius"]


def attack_step_size(eps: torch.Tensor, ratio: float, floor: float) -> torch.Tensor:
    """Per-sample PGD step max(ratio * eps_i, floor): the code's max(eps/5, 2/255)."""
    return torch.clamp(eps * ratio, min=floor)


def predicts_label(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[B] bool: argmax f(x) == y, without gradients (in whatever mode the model is in)."""
    with torch.no_grad():
        return model(x).argmax(dim=1) == y


def survives_attack(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor, *,
                    step_ratio: float, step_floor: float, steps: int, norm: str = "Linf") -> torch.Tensor:
    """[B] bool: the label survives a fresh CE PGD attack at per-sample radius ``eps`` (``norm`` ball)."""
    step_size = attack_step_size(eps, step_ratio, step_floor)
    adv = pgd(model, x, y, ce_loss, eps=eps, step_size=step_size, steps=steps, init="uniform", norm=norm)
    return predicts_label(model, adv, y)


def choose_radius(prev: torch.Tensor, ok_high: torch.Tensor, ok_current: torch.Tensor,
                  gamma: float) -> torch.Tensor:
    """Alg. 2 lines 4-10: eps+gamma if that attack fails, else eps if that one fails, else eps-gamma."""
    return torch.where(ok_high, prev + gamma, torch.where(ok_current, prev, prev - gamma))


def smooth_radius(prev: torch.Tensor, picked: torch.Tensor, beta: float) -> torch.Tensor:
    """Alg. 2 line 11: the exponential average (1 - beta) * mem + beta * picked."""
    return beta * picked + (1 - beta) * prev
