"""TRADES (Zhang et al. 2019): CE(clean) + beta * KL(p(clean) || p(adv)).

The attack maximises the same KL from x + 0.001 N(0, 1) (a zero start has zero gradient);
the clean side of the training KL is not detached, as in the authors' code.
"""

from typing import Literal

import torch.nn.functional as F
from pydantic import Field

from advcore import AttackObjective, PluginInfo, PluginOptions, hookimpl
from advcore.losses import kl_from_logits, kl_to_probs

NAME = "trades"


class Options(PluginOptions):
    beta: float = Field(6.0, ge=0, description="weight of the KL term (1/lambda)")
    attack_mode: Literal["eval", "train"] = Field("eval", description="model mode while attacking")


def clean_probs(model, x, y):
    return F.softmax(model(x), dim=1)


def kl_attack(mode: str, name: str = NAME) -> AttackObjective:
    """The TRADES inner maximisation: KL to the clean prediction, from a tiny Gaussian start."""
    return AttackObjective(name, loss=lambda logits, p: kl_to_probs(p, logits), prepare=clean_probs,
                           init="normal", mode=mode)


@hookimpl
def advcore_plugin_info():
    return PluginInfo(summary="TRADES: CE(clean) + beta*KL(clean||adv)", roles=("objective",), options=Options)


@hookimpl
def advcore_attack_objective(run):
    return kl_attack(run.options[NAME].attack_mode)


@hookimpl
def advcore_loss_terms(run, step):
    kl = kl_from_logits(step.logits("clean"), step.logits("adv"))
    return [step.term("ce_clean", step.supervised_loss("clean")),
            step.term("kl", kl, weight=run.options[NAME].beta)]
