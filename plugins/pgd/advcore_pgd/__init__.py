"""The default base adversary: K projected steepest-ascent steps on the objective's inner loss.

Signed steps in the Linf ball, normalised-gradient steps in the L2 ball (``attack.norm``).
Plugins implementing ``advcore_attack_step`` see every iteration (GAIRAT counts with it);
without any, ``on_step`` is None and the loop is the plain one.
"""

from advcore import PluginInfo, hookimpl
from advcore.attacks import pgd


@hookimpl
def advcore_plugin_info():
    return PluginInfo(summary="PGD-K adversary with per-sample budgets (default)", roles=("adversary",),
                      default_for=("adversary",))


@hookimpl
def advcore_generate_adversarial(run, step, objective):
    target = objective.target(step.model, step.x, step.y)
    return pgd(step.model, step.x, target, objective.loss, eps=step.eps, step_size=step.step_size,
               steps=step.steps, init=objective.init, norm=run.norm,
               on_step=run.hooks.attack_step_callback(run, step), labels=step.y)
