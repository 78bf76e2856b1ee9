"""PGD-AT (Madry et al. 2018): CE on PGD examples from a uniform random start."""

from typing import Literal

from pydantic import Field

from advcore import AttackObjective, PluginInfo, PluginOptions, hookimpl
from advcore.attacks import ce_loss

NAME = "pgd-at"


class Options(PluginOptions):
    attack_mode: Literal["eval", "train"] = Field("eval", description="model mode while attacking")


@hookimpl
def advcore_plugin_info():
    return PluginInfo(summary="Madry PGD-AT: CE on adversarial examples", roles=("objective",),
                      default_for=("objective",), options=Options)


@hookimpl
def advcore_attack_objective(run):
    return AttackObjective(NAME, loss=ce_loss, init="uniform", mode=run.options[NAME].attack_mode)


@hookimpl
def advcore_loss_terms(step):
    return [step.term("ce_adv", step.supervised_loss("adv"))]
