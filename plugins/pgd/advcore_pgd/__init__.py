"""The default base adversary: K projected signed-gradient steps on the objective's inner loss."""

from advcore import PluginInfo, hookimpl
from advcore.attacks import pgd


@hookimpl
def advcore_plugin_info():
    return PluginInfo(summary="PGD-K adversary with per-sample budgets (default)", roles=("adversary",),
                      default_for=("adversary",))


@hookimpl
def advcore_generate_adversarial(step, objective):
    target = objective.target(step.model, step.x, step.y)
    return pgd(step.model, step.x, target, objective.loss, eps=step.eps, step_size=step.step_size,
               steps=step.steps, init=objective.init)
