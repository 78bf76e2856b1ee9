"""RAAT's sample split: non-boundary, boundary and misclassified rows.

The split only reads predictions (``argmax``), taken in eval mode without gradients: the
paper's fixed copy of the model, theta-bar. Nothing here enters the loss graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from advcore.attacks import model_mode, pgd


@dataclass(frozen=True)
class Split:
    """Boolean row masks [N]; every row is in exactly one of the three groups."""

    boundary: torch.Tensor
    non_boundary: torch.Tensor
    misclassified: torch.Tensor

    @property
    def correct(self) -> torch.Tensor:
        return ~self.misclassified


def scaled_reduction(x: torch.Tensor, x_adv: torch.Tensor, eta: float) -> torch.Tensor:
    """The authors' reduced sample x + eta (x' - x): the full perturbation shrunk, no new attack.

    A convex combination of two points in [0, 1], so it needs no clipping, and it stays in each
    row's own eta * eps_i ball when budgets are per sample.
    """
    return x + eta * (x_adv - x)


def attacked_reduction(run, step, eta: float) -> torch.Tensor:
    """The paper's Eq. 8: a separate attack of the objective's inner loss within eta * eps.

    Costs ``step.steps`` more forward/backward passes than the scaled form.
    """
    objective = run.hooks.attack_objective(run, step)
    if objective is None:
        from advcore.errors import PluginError

        raise PluginError("raat reduced='attack' needs an objective with an inner loss; "
                          "use an adversarial objective such as pgd-at or mart")
    with model_mode(step.model, run.attack_mode(objective.mode)):
        target = objective.target(step.model, step.x, step.y)
        return pgd(step.model, step.x, target, objective.loss, eps=step.eps * eta,
                   step_size=step.step_size * eta, steps=step.steps, init=objective.init, norm=run.norm)


@torch.no_grad()
def predictions_correct(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[N] bool: does the eval-mode model classify each row of ``x`` as ``y``?"""
    with model_mode(model, "eval"):
        return model(x).argmax(dim=1) == y


def split_rows(model: torch.nn.Module, x: torch.Tensor, x_adv: torch.Tensor, x_reduced: torch.Tensor,
               y: torch.Tensor, rule: str) -> Split:
    """Classify every row from eval-mode predictions at x, x' and x''.

    ``rule="code"`` (authors' code): boundary = correct at x, wrong at x' and wrong at x''.
    ``rule="paper"`` (Eq. 9): boundary = correct at x and wrong at x'' (x' is not consulted,
    which saves one forward pass).
    """
    correct = predictions_correct(model, x, y)
    reduced_ok = predictions_correct(model, x_reduced, y)
    boundary = correct & ~reduced_ok
    if rule == "code":
        boundary = boundary & ~predictions_correct(model, x_adv, y)
    return Split(boundary=boundary, non_boundary=correct & ~boundary, misclassified=~correct)
