"""ALP (Kannan et al. 2018), as in the HE paper's Table 1:
0.5 CE(clean) + 0.5 CE(adv) + beta * mean_k (f(clean)_k - f(adv)_k)^2."""

from typing import Literal

from pydantic import Field

from advcore import AttackObjective, PluginInfo, PluginOptions, hookimpl
from advcore.attacks import ce_loss

NAME = "alp"


class Options(PluginOptions):
    beta: float = Field(0.5, ge=0, description="weight of the logit-pairing MSE")
    attack_mode: Literal["eval", "train"] = Field("eval", description="model mode while attacking")


@hookimpl
def advcore_plugin_info():
    return PluginInfo(summary="ALP: mixed CE + beta*MSE(logits clean, logits adv)", roles=("objective",),
                      options=Options)


@hookimpl
def advcore_attack_objective(run):
    return AttackObjective(NAME, loss=ce_loss, init="uniform", mode=run.options[NAME].attack_mode)


@hookimpl
def advcore_loss_terms(run, step):
    mse = (step.logits("clean") - step.logits("adv")).pow(2).mean(dim=1)
    return [step.term("ce_clean", step.supervised_loss("clean"), weight=0.5),
            step.term("ce_adv", step.supervised_loss("adv"), weight=0.5),
            step.term("logit_pairing", mse, weight=run.options[NAME].beta)]
