"""FAT (Zhang et al., ICML 2020, "Attacks which do not kill training make adversarial learning stronger").

An adversary: PGD on the active objective's inner loss that stops each example soon after
it is misclassified. Before every step each iterate is classified; a misclassified one with
budget 0 stops (that iterate is its output), one with budget > 0 spends a unit and steps on
(the authors' ``earlystop.py``). The budget starts at ``tau`` (0: stop at the first
misclassification, so an example wrong at its random start takes no step). Because it only
replaces the adversary, the objective's loss (CE, TRADES' KL, HAT's) is what it climbs.
"""

from __future__ import annotations

import torch
from pydantic import Field

from advcore import PluginInfo, PluginOptions, hookimpl
from advcore.attacks import AttackStep, chain_callbacks, pgd

NAME = "fat"


class Options(PluginOptions):
    tau: int = Field(0, ge=0, description="extra misclassified steps each example may take before it stops "
                                          "(paper: 0..3)")
    tau_epochs: list[int] = Field(default_factory=list, description="epochs (0-based) at which tau grows by "
                                  "one; [51, 91] with tau 0 is the authors' dynamic tau (0, 1, 2)")


def tau_at(opts: Options, epoch: int) -> int:
    """tau plus one for every epoch of ``tau_epochs`` already reached."""
    return opts.tau + sum(epoch >= e for e in opts.tau_epochs)


class EarlyStop:
    """The per-sample budget of one attack; called once per PGD iteration.

    ``steps`` counts the steps each example took (float32, for ``run.state``).
    """

    def __init__(self, labels: torch.Tensor, tau: int):
        self.labels = labels
        self.budget = torch.full(labels.shape, tau, dtype=torch.int32, device=labels.device)
        self.steps = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)

    def __call__(self, attack: AttackStep) -> torch.Tensor:
        wrong = (attack.logits.argmax(1) != self.labels) & attack.active
        stop = wrong & (self.budget == 0)
        self.budget = self.budget - (wrong & ~stop).to(torch.int32)
        self.steps = self.steps + (attack.active & ~stop).float()
        return stop


@hookimpl
def advcore_plugin_info():
    return PluginInfo(summary="FAT: early-stopped PGD, each example stops tau steps after it is misclassified",
                      roles=("adversary",), options=Options)


@hookimpl
def advcore_generate_adversarial(run, step, objective):
    stop = EarlyStop(step.y, tau_at(run.options[NAME], step.epoch))
    target = objective.target(step.model, step.x, step.y)
    adv = pgd(step.model, step.x, target, objective.loss, eps=step.eps, step_size=step.step_size,
              steps=step.steps, init=objective.init, norm=run.norm,
              on_step=chain_callbacks(stop, run.hooks.attack_step_callback(run, step)), labels=step.y)
    run.state.tensor("fat.steps")[step.index] = stop.steps
    return adv


@hookimpl
def advcore_on_epoch_end(run, metrics):
    if "fat.steps" in run.state:  # mean PGD steps per example, over the examples seen so far
        metrics["fat.mean_steps"] = round(run.state["fat.steps"].mean().item(), 4)
