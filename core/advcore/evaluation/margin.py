"""Directional margin along initial adversarial directions (HAT, Rade & Moosavi-Dezfooli 2022, Sec. 3).

The margin of classifier F at x along a unit vector r is the smallest |alpha| with
F(x + alpha r) != F(x) (HAT Eq. 2). R_init holds the directions of PGD perturbations found on
a *standard* network, normalised to unit L2 norm (Eq. 3). HAT shows adversarial training
inflates the margin along R_init far beyond the budget (Fig. 4; median margins in Tables 1
and 5); this module measures it for any pair of models.

The search walks a geometric grid of alphas on both sides of x, then bisects the first
interval where the prediction flips. Points are not clipped to [0, 1] (the margin is a
property of the decision boundary in input space); alpha is searched up to ``max_alpha``
(default sqrt(d), the diagonal of the unit box) and samples whose prediction never flips
get margin inf ("censored").
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..attacks import ce_loss, model_mode, pgd
from .eval_attacks import predict, progress_bar

__all__ = ["initial_directions", "directional_margin", "margin_summary", "margin_analysis"]


def initial_directions(standard: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                       norm: str = "Linf", steps: int = 20, step_size: float | None = None,
                       batch_size: int = 256) -> torch.Tensor:
    """R_init: PGD (CE) perturbations on the standard model, each scaled to unit L2 norm."""
    alpha = eps / 4 if step_size is None else step_size
    out = []
    with model_mode(standard, "eval"):
        for i in range(0, y.shape[0], batch_size):
            xs, ys = x[i:i + batch_size], y[i:i + batch_size]
            x_adv = pgd(standard, xs, ys, ce_loss, eps=eps, step_size=alpha, steps=steps, norm=norm)
            delta = (x_adv - xs).flatten(1)
            out.append((delta / delta.norm(dim=1, keepdim=True).clamp_min(1e-12)).view_as(xs))
    return torch.cat(out)


def _flips(model, x, r, alphas, f0) -> torch.Tensor:
    """[B, G] True where the prediction at x + alpha_g r differs from f0."""
    b, g = x.shape[0], alphas.shape[1]
    shape = (-1, *([1] * (x.dim() - 1)))
    points = (x[:, None] + alphas.reshape(b, g, *shape[1:]) * r[:, None]).flatten(0, 1)
    with torch.no_grad():
        pred = model(points).argmax(1).view(b, g)
    return pred != f0[:, None]


def directional_margin(model: torch.nn.Module, x: torch.Tensor, r: torch.Tensor, *, max_alpha: float | None = None,
                       grid: int = 48, bisections: int = 24, batch_size: int = 64,
                       progress: bool = False) -> torch.Tensor:
    """Per-sample margin along r (both signs), up to ``max_alpha``; inf where the label never flips."""
    max_alpha = math.sqrt(x[0].numel()) if max_alpha is None else max_alpha
    device = next(model.parameters()).device
    steps = torch.logspace(math.log10(max_alpha) - 4, math.log10(max_alpha), grid, device=device)
    margins = []
    chunks = range(0, x.shape[0], batch_size)
    with model_mode(model, "eval"):
        for i in progress_bar(chunks, len(chunks), "margins", progress):
            xs, rs = x[i:i + batch_size].to(device), r[i:i + batch_size].to(device)
            f0 = predict(model, xs)
            best = torch.full((xs.shape[0],), math.inf, device=device)
            for sign in (1.0, -1.0):
                flips = _flips(model, xs, rs, sign * steps.expand(xs.shape[0], -1), f0)
                found = flips.any(1)
                first = flips.float().argmax(1)  # index of the first flip (0 where none)
                hi = steps[first]
                lo = torch.where(first > 0, steps[(first - 1).clamp_min(0)], torch.zeros_like(hi))
                for _ in range(bisections):
                    mid = (lo + hi) / 2
                    flipped = _flips(model, xs, rs, sign * mid[:, None], f0)[:, 0]
                    hi, lo = torch.where(flipped, mid, hi), torch.where(flipped, lo, mid)
                best = torch.where(found, torch.minimum(best, hi), best)
            margins.append(best.cpu())
    return torch.cat(margins)


def margin_summary(margins: torch.Tensor, *, reference: float | None = None, bins: int = 20,
                   max_alpha: float | None = None) -> dict[str, Any]:
    """Median, censored count, histogram of the finite margins and the share above ``reference``."""
    finite = margins[torch.isfinite(margins)]
    top = max_alpha if max_alpha is not None else (finite.max().item() if finite.numel() else 1.0)
    counts = torch.histc(finite, bins=bins, min=0.0, max=top) if finite.numel() else torch.zeros(bins)
    median = margins.median().item() if margins.numel() else math.inf
    out = {"n": int(margins.numel()), "median": median if math.isfinite(median) else None,
           "censored": int((~torch.isfinite(margins)).sum()),
           "histogram": {"edges": torch.linspace(0, top, bins + 1).tolist(), "counts": counts.int().tolist()}}
    if reference is not None:
        out["reference"] = reference
        out["above_reference"] = (margins > reference).float().mean().item()
    return out


def margin_analysis(standard: torch.nn.Module, robust: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                    eps: float, norm: str = "Linf", steps: int = 20, max_alpha: float | None = None,
                    batch_size: int = 64, progress: bool = True) -> dict[str, Any]:
    """Margins of both models along R_init (from the standard model); the reference line is the
    L2 radius of the attack budget (eps * sqrt(d) for Linf, as in HAT Fig. 4)."""
    device = next(standard.parameters()).device
    x, y = x.to(device), y.to(device)
    directions = initial_directions(standard, x, y, eps=eps, norm=norm, steps=steps, batch_size=batch_size)
    max_alpha = math.sqrt(x[0].numel()) if max_alpha is None else max_alpha
    reference = eps * math.sqrt(x[0].numel()) if norm == "Linf" else eps
    per_model = {}
    for name, model in (("standard", standard), ("robust", robust)):
        m = directional_margin(model, x, directions, max_alpha=max_alpha, batch_size=batch_size, progress=progress)
        per_model[name] = {"margins": [v if math.isfinite(v) else None for v in m.tolist()],
                           **margin_summary(m, reference=reference, max_alpha=max_alpha)}
    return {"n": int(y.shape[0]), "eps": eps, "norm": norm, "max_alpha": max_alpha, **per_model}
