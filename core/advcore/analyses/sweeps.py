"""Accuracy as a function of the attack budget or of the number of attack steps.

The curves behind HAT Fig. 6/10 and IAAT Fig. 4 (accuracy vs eps) and HAT Table 10
(accuracy vs PGD steps); ``advcore plot sweep`` draws several models on one figure.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterable

import torch

from ..kernel.config import parse_fraction
from ..errors import ConfigError
from ..evaluation.eval_attacks import attack_flags, parse_attacks, progress_bar

__all__ = ["eps_sweep", "steps_sweep", "parse_values"]


def parse_values(text: str, kind=float) -> list:
    """``"0,2/255,8/255"`` -> [0.0, 0.00784, 0.0314]; fractions are allowed for eps."""
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            values.append(float(parse_fraction(part)) if kind is float else kind(part))
        except ValueError:
            raise ConfigError(f"cannot read {part!r} as a number; write a comma-separated list like 0,2/255,8/255") from None
    if not values:
        raise ConfigError("empty list of values; write a comma-separated list like 0,2/255,8/255")
    return values


def eps_sweep(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps_values: Iterable[float], *,
              attack: str = "pgd", norm: str = "Linf", steps: int = 20, restarts: int = 1, batch_size: int = 256,
              seed: int = 0, progress: bool = True) -> dict[str, list]:
    """{"x": eps values, "acc": accuracy under ``attack`` at each}; eps 0 is clean accuracy."""
    (spec,) = parse_attacks([attack], pgd_steps=steps, restarts=restarts)
    xs, accs = [], []
    for eps in progress_bar(list(eps_values), len(list(eps_values)), "eps sweep", progress):
        clean, flags, _ = attack_flags(model, x, y, [] if eps == 0 else [spec], eps=max(eps, 1e-12), norm=norm,
                                       batch_size=batch_size, seed=seed, progress=False)
        xs.append(eps)
        accs.append((flags[spec.key] if flags else clean).float().mean().item())
    return {"x": xs, "acc": accs, "attack": spec.key.removesuffix("_acc")}


def steps_sweep(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps_values: Iterable[int], *,
                eps: float, attack: str = "pgd", norm: str = "Linf", restarts: int = 1, batch_size: int = 256,
                seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """{"x": step counts, "acc": accuracy under ``attack`` (pgd, cw or mim) with that many steps}."""
    (spec,) = parse_attacks([attack], restarts=restarts)
    if spec.kind not in ("pgd", "cw", "mim"):
        raise ConfigError(f"a steps sweep needs an iterative attack (pgd, cw, mim), not {attack!r}")
    xs, accs = [], []
    for k in progress_bar(list(steps_values), len(list(steps_values)), "steps sweep", progress):
        s = replace(spec, steps=int(k))
        _, flags, _ = attack_flags(model, x, y, [s], eps=eps, norm=norm, batch_size=batch_size, seed=seed,
                                   progress=False)
        xs.append(int(k))
        accs.append(flags[s.key].float().mean().item())
    return {"x": xs, "acc": accs, "attack": spec.kind, "eps": eps}
