"""Label smoothing for every supervised term: target = (1 - s) * onehot(y) + s / K.

A third-party plugin in its own package: it only declares the ``advcore.plugins`` entry
point and implements one target-adaptation hook, so it composes with any objective.
"""

import torch.nn.functional as F
from pydantic import Field

from advcore import PluginInfo, PluginOptions, hookimpl

NAME = "label-smoothing"


class Options(PluginOptions):
    smoothing: float = Field(0.1, ge=0, lt=1, description="probability mass spread over all classes")


@hookimpl
def advcore_plugin_info():
    return PluginInfo(summary="label smoothing of the clean and adversarial targets", options=Options)


@hookimpl
def advcore_adapt_targets(run, step):
    s = run.options[NAME].smoothing
    k = run.info.num_classes
    for name in ("clean", "adv"):
        base = step.targets.get(name, step.y)
        hard = F.one_hot(base, k).float() if base.dim() == 1 else base
        step.targets[name] = (1 - s) * hard + s / k
