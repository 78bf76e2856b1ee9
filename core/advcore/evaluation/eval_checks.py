"""Sanity checks for gradient masking (Athalye et al., 2018; HAT App. C.4).

A model whose gradients are masked looks robust to gradient attacks without being robust.
The checks the papers report, each a pass/fail with the numbers behind it:

- ``eps_monotone``: PGD accuracy does not rise as eps grows;
- ``eps_to_zero``: an unbounded attack (the whole [0, 1] box) leaves ~0% accuracy;
- ``more_steps`` / ``more_restarts``: 5x the steps, or 5 restarts, change accuracy little
  (a large drop means the attack had not converged);
- ``black_box_weaker``: the score-based Square attack does not beat the white-box attacks;
- ``transfer_weaker``: PGD examples from a surrogate model do not beat them either
  (skipped when no surrogate is given).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..attacks import ce_loss, model_mode, pgd
from .eval_attacks import pgd_flags, predict, progress_bar, square_flags

__all__ = ["CheckResult", "gradient_masking_checks", "summarize_checks", "transfer_flags"]


@dataclass
class CheckResult:
    name: str
    passed: bool | None  # None: skipped
    detail: str
    values: dict[str, Any] = field(default_factory=dict)


def _batched(fn, x, y, batch_size):
    return torch.cat([fn(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, y.shape[0], batch_size)])


def _acc(flags: torch.Tensor) -> float:
    return flags.float().mean().item()


def transfer_flags(surrogate: torch.nn.Module, target: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                   eps: float, norm: str = "Linf", steps: int = 20, step_size: float | None = None) -> torch.Tensor:
    """True where the target still classifies PGD examples crafted on the surrogate correctly."""
    alpha = eps / 4 if step_size is None else step_size
    with model_mode(surrogate, "eval"):
        x_adv = pgd(surrogate, x, y, ce_loss, eps=eps, step_size=alpha, steps=steps, norm=norm)
    with torch.no_grad():
        return target(x_adv).argmax(1) == y


def gradient_masking_checks(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                            norm: str = "Linf", steps: int = 20, step_size: float | None = None,
                            surrogate: torch.nn.Module | None = None, eps_factors=(0.0, 0.5, 1.0, 2.0, 4.0),
                            step_factor: int = 5, restarts: int = 5, square_queries: int = 1000,
                            tolerance: float = 0.03, zero_tolerance: float = 0.02, batch_size: int = 256,
                            seed: int = 0, progress: bool = True,
                            known: dict[tuple[float, int, int], float] | None = None) -> list[CheckResult]:
    """Run every check on (x, y); ``tolerance`` is the accuracy change (absolute) counted as "little".

    ``known`` maps (eps, steps, restarts) to a PGD accuracy already measured on the same (x, y),
    e.g. the report's ``pgd20_acc``: it is reused, so one report shows one PGD figure.
    """
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    # the unbounded budget: the Linf or L2 ball that holds the whole [0, 1] box
    unbounded = 1.0 if norm == "Linf" else math.sqrt(x[0].numel())
    results: list[CheckResult] = []

    def pgd_acc(e: float, k: int, r: int = 1) -> float:
        if known and (e, k, r) in known:
            return known[(e, k, r)]
        if e == 0:
            return _acc(predict(model, x, batch_size) == y)
        torch.manual_seed(seed)
        alpha = step_size * e / eps if step_size is not None else None
        return _acc(_batched(lambda a, b: pgd_flags(model, a, b, eps=e, norm=norm, steps=k, step_size=alpha,
                                                    restarts=r), x, y, batch_size))

    with model_mode(model, "eval"):
        grid = sorted({eps * f for f in eps_factors} | {unbounded})
        sweep = {}
        for e in progress_bar(grid, len(grid), "checks: eps sweep", progress):
            sweep[e] = pgd_acc(e, steps)
        accs = [sweep[e] for e in grid]
        rises = [(grid[i], grid[i + 1]) for i in range(len(grid) - 1) if accs[i + 1] > accs[i] + tolerance]
        results.append(CheckResult(
            "eps_monotone", not rises,
            "accuracy falls as eps grows" if not rises else
            f"accuracy rises from eps {rises[0][0]:.4g} to {rises[0][1]:.4g}", {"eps": grid, "acc": accs}))
        last = sweep[unbounded]
        results.append(CheckResult(
            "eps_to_zero", last <= zero_tolerance,
            f"unbounded PGD (eps {unbounded:.4g}) leaves {last:.1%} accuracy (want <= {zero_tolerance:.0%})",
            {"eps": unbounded, "acc": last}))

        base = sweep[eps] if eps in sweep else pgd_acc(eps, steps)
        more = pgd_acc(eps, steps * step_factor)
        results.append(CheckResult(
            "more_steps", base - more <= tolerance,
            f"PGD-{steps} {base:.1%} vs PGD-{steps * step_factor} {more:.1%}",
            {"steps": [steps, steps * step_factor], "acc": [base, more]}))
        restarted = pgd_acc(eps, steps, restarts)
        results.append(CheckResult(
            "more_restarts", base - restarted <= tolerance,
            f"PGD-{steps} 1 restart {base:.1%} vs {restarts} restarts {restarted:.1%}",
            {"restarts": [1, restarts], "acc": [base, restarted]}))
        white = min(base, more, restarted)

        torch.manual_seed(seed)
        square = _acc(_batched(lambda a, b: square_flags(model, a, b, eps=eps, norm=norm, queries=square_queries,
                                                         seed=seed), x, y, batch_size))
        results.append(CheckResult(
            "black_box_weaker", square >= white - tolerance,
            f"Square ({square_queries} queries) {square:.1%} vs white-box {white:.1%}",
            {"square": square, "white_box": white}))

        if surrogate is None:
            results.append(CheckResult("transfer_weaker", None, "skipped: no surrogate model (pass --surrogate)"))
        else:
            torch.manual_seed(seed)
            clean = predict(model, x, batch_size) == y
            transfer = _acc(clean & _batched(lambda a, b: transfer_flags(surrogate, model, a, b, eps=eps, norm=norm,
                                                                         steps=steps, step_size=step_size),
                                             x, y, batch_size))
            results.append(CheckResult(
                "transfer_weaker", transfer >= white - tolerance,
                f"transfer from surrogate {transfer:.1%} vs white-box {white:.1%}",
                {"transfer": transfer, "white_box": white}))
    return results


def summarize_checks(results: list[CheckResult]) -> dict[str, Any]:
    """JSON form: ``passed`` is False as soon as one check failed (skipped checks do not count)."""
    failed = [r.name for r in results if r.passed is False]
    return {"passed": not failed, "failed": failed, "results": [asdict(r) for r in results]}
