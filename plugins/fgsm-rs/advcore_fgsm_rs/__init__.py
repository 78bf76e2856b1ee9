"""FGSM with a random start (Wong et al. 2020, "Fast is better than free").

delta ~ U[-eps, eps], one signed step of size alpha = ratio * eps on the objective's inner
loss, projected back to the per-sample budget and the input range.
"""

from pydantic import Field

from advcore import PluginInfo, PluginOptions, hookimpl
from advcore.attacks import pgd
from advcore.errors import ConfigError

NAME = "fgsm-rs"


class Options(PluginOptions):
    alpha_ratio: float = Field(1.25, gt=0, description="step size as a multiple of each sample's eps")


@hookimpl
def advcore_plugin_info():
    return PluginInfo(summary="FGSM with random start, step 1.25*eps", roles=("adversary",), options=Options)


@hookimpl(tryfirst=True)  # refuse L2 before other plugins' run-start work
def advcore_on_run_start(run):
    """One signed step from a uniform cube start is an Linf construction (step size 1.25 eps)."""
    if run.norm != "Linf":
        raise ConfigError(f"{NAME} supports attack.norm=Linf only; use the default pgd adversary for {run.norm}")


@hookimpl
def advcore_generate_adversarial(run, step, objective):
    target = objective.target(step.model, step.x, step.y)
    return pgd(step.model, step.x, target, objective.loss, eps=step.eps,
               step_size=step.eps * run.options[NAME].alpha_ratio, steps=1, init="uniform")
