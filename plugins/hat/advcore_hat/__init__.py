"""HAT (Rade & Moosavi-Dezfooli, ICLR 2022): TRADES plus a loss on helper examples.

    L = CE(f(x), y) + beta * KL(p(x) || p(x_adv)) + gamma * CE(f(x + h*(x_adv - x)), argmax f_std(x_adv))

The helper example extrapolates the adversarial perturbation (h = 2) and is labelled by a
standard network queried at x_adv, which keeps the robust model from pushing its margin
further than needed. As in the authors' code: the attack maximises the KL to p(x) computed
once in eval mode from x + 0.001 N(0, 1); the helper is not clipped to [0, 1]; clean, adv
and helper get three separate train-mode forwards; the clean side of the KL is not detached.
``robust_loss="ce"`` is the AT-based variant the paper uses on Tiny-ImageNet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from advcore import AttackObjective, PluginInfo, PluginOptions, hookimpl
from advcore.attacks import ce_loss
from advcore.losses import kl_from_logits, kl_to_probs

from .standard import standard_network

NAME = "hat"


class Options(PluginOptions):
    beta: float | None = Field(None, ge=0, description="weight of the robust term; None = 3.5 on cifar100, 2.5 "
                                                       "elsewhere (paper; its TRADES baseline uses 5)")
    gamma: float = Field(0.5, ge=0, description="weight of the helper loss (paper 0.5; 0 = TRADES)")
    h: float = Field(2.0, gt=0, description="helper example x + h*(x_adv - x)")
    clip_helper: bool = Field(False, description="clip the helper example to [0, 1] (the authors' code does not)")
    robust_loss: Literal["kl", "ce"] = Field(
        "kl", description="kl: TRADES-based HAT; ce: AT-based HAT (CE attack from a uniform start, CE robust term)")
    attack_mode: Literal["eval", "train"] = Field("eval", description="model mode while attacking")
    std_checkpoint: str | None = Field(None, description="checkpoint of the standard network that labels helpers; "
                                                         "none = train one first into RUN/hat-standard/")
    std_epochs: int | None = Field(None, ge=1, description="epochs of that standard training; none = the run's epochs")


@dataclass
class HatState:
    """Runtime objects kept in ``run.stash["hat"]``."""

    std: torch.nn.Module | None = None


def beta_of(run) -> float:
    beta = run.options[NAME].beta
    if beta is None:
        return 3.5 if run.info.name == "cifar100" else 2.5
    return beta


def helper_example(x: torch.Tensor, x_adv: torch.Tensor, h: float, clip: bool) -> torch.Tensor:
    helper = x + h * (x_adv - x)
    return helper.clamp(0, 1) if clip else helper


def clean_probs(model, x, y):
    return F.softmax(model(x), dim=1)


@hookimpl
def advcore_plugin_info():
    return PluginInfo(summary="HAT: TRADES + gamma*CE on helper examples x+2r labelled by a standard network",
                      roles=("objective",), options=Options)


@hookimpl
def advcore_on_run_start(run):
    opts = run.options[NAME]
    state = run.stash.setdefault(NAME, HatState())
    if opts.gamma > 0 and state.std is None:
        state.std = standard_network(run, opts.std_checkpoint, opts.std_epochs)


@hookimpl
def advcore_attack_objective(run):
    opts = run.options[NAME]
    if opts.robust_loss == "ce":
        return AttackObjective(NAME, loss=ce_loss, init="uniform", mode=opts.attack_mode)
    return AttackObjective(NAME, loss=lambda logits, p: kl_to_probs(p, logits), prepare=clean_probs,
                           init="normal", mode=opts.attack_mode)


@hookimpl
def advcore_derive_examples(run, step):
    opts = run.options[NAME]
    if opts.gamma == 0 or "adv" not in step.examples:
        return
    adv = step.examples["adv"].detach()
    step.examples["helper"] = helper_example(step.x, adv, opts.h, opts.clip_helper)


@hookimpl
def advcore_adapt_targets(run, step):
    if "helper" not in step.examples:
        return
    std = run.stash[NAME].std
    with torch.no_grad():
        label = std(step.examples["adv"].detach()).argmax(dim=1)  # queried at x + r, not at the helper
    step.targets["helper"] = label
    step.record("hat.helper_label_is_y", (label == step.y).float().mean())


@hookimpl
def advcore_loss_terms(run, step):
    opts = run.options[NAME]
    if opts.robust_loss == "ce":
        robust = step.term("ce_adv", step.supervised_loss("adv"), weight=beta_of(run))
    else:
        robust = step.term("kl", kl_from_logits(step.logits("clean"), step.logits("adv")), weight=beta_of(run))
    terms = [step.term("ce_clean", step.supervised_loss("clean")), robust]
    if "helper" in step.examples:
        terms.append(step.term("ce_helper", step.supervised_loss("helper"), weight=opts.gamma))
    return terms
