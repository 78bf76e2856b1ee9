"""MART (Wang et al. 2020): boosted CE on adversarial examples + beta * KL * (1 - p_y(clean)).

Constants (1.0001, 1e-12, 1.0000001) follow the authors' code; nothing is detached. The
boosted CE uses ``examples["adv"]`` (which RAAT may rebuild per sample) and the KL uses the
adversary's own output ``examples["attack"]``, which is how RAAT++ is defined.
"""

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from advcore import AttackObjective, PluginInfo, PluginOptions, hookimpl
from advcore.attacks import ce_loss

NAME = "mart"


class Options(PluginOptions):
    beta: float = Field(6.0, ge=0, description="weight of the misclassification-aware KL term")
    attack_mode: Literal["eval", "train"] = Field("eval", description="model mode while attacking")


def boosted_ce_margin(logits_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """-log(1.0001 - q_wrong): pushes down the most probable wrong class."""
    q = F.softmax(logits_adv, dim=1)
    top2 = q.argsort(dim=1)[:, -2:]
    wrong = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
    return -torch.log(1.0001 - q.gather(1, wrong[:, None]).squeeze(1) + 1e-12)


def weighted_kl(logits_clean: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    p = F.softmax(logits_clean, dim=1)
    q = F.softmax(logits_adv, dim=1)
    kl = (p * (torch.log(p + 1e-12) - torch.log(q + 1e-12))).sum(dim=1)
    return kl * (1.0000001 - p.gather(1, y[:, None]).squeeze(1))


@hookimpl
def advcore_plugin_info():
    return PluginInfo(summary="MART: boosted CE + beta*KL*(1-p_y(clean))", roles=("objective",), options=Options)


@hookimpl
def advcore_attack_objective(run):
    return AttackObjective(NAME, loss=ce_loss, init="normal", mode=run.options[NAME].attack_mode)


@hookimpl
def advcore_loss_terms(run, step):
    bce = step.supervised_loss("adv") + boosted_ce_margin(step.logits("adv"), step.y)
    kl = weighted_kl(step.logits("clean"), step.logits("attack"), step.y)
    return [step.term("bce", bce), step.term("kl", kl, weight=run.options[NAME].beta)]
