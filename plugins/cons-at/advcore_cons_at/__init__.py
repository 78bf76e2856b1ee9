"""Cons-AT (Tack et al. 2022), as in Table 4 of the RAAT paper: CE on the adversarial examples of
two augmented views plus lam * JS between the two views' adversarial predictions.

The authors' code (also the RAAT code base) runs the CE over all 2B rows, takes the JS between
softmax(z1 / T) and softmax(z2 / T) with T = 0.5 and averages it over the B pairs; Table 4 writes
the JS without a temperature (``temperature=1``). Both views' logits come from the same forward
as the CE, so Cons-AT costs one training forward on 2B rows.
"""

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from advcore import AttackObjective, PluginInfo, PluginOptions, hookimpl
from advcore.attacks import ce_loss
from advcore.errors import PluginError
from advcore.losses import js_divergence

NAME = "cons-at"


class Options(PluginOptions):
    lam: float = Field(1.0, ge=0, description="weight of the consistency (JS) term")
    temperature: float = Field(0.5, gt=0, description="softmax temperature of the JS (code 0.5; Table 4: 1)")
    attack_mode: Literal["eval", "train"] = Field("eval", description="model mode while attacking")


@hookimpl
def advcore_plugin_info():
    return PluginInfo(summary="Cons-AT: CE(adv) + lam*JS between the adversarial predictions of two views",
                      roles=("objective",), options=Options)


@hookimpl
def advcore_data_views():
    return 2


@hookimpl
def advcore_attack_objective(run):
    return AttackObjective(NAME, loss=ce_loss, init="uniform", mode=run.options[NAME].attack_mode)


def consistency_js(logits_1: torch.Tensor, logits_2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-pair JS(softmax(z1 / T) || softmax(z2 / T)) [B]."""
    return js_divergence(F.softmax(logits_1 / temperature, dim=1), F.softmax(logits_2 / temperature, dim=1))


@hookimpl
def advcore_loss_terms(run, step):
    """CE on every row; the JS per pair sits on the first-view row (mask), so the core's masked
    mean is the code's batchmean over the B pairs."""
    if step.num_views < 2:
        raise PluginError("cons-at needs two views of every sample but the batch has one")
    opts = run.options[NAME]
    b = step.size // step.num_views
    logits = step.logits("adv")
    js = consistency_js(logits[:b], logits[b:2 * b], opts.temperature)
    values = torch.cat([js, js.new_zeros(step.size - b)])
    mask = torch.arange(step.size, device=values.device) < b
    return [step.term("ce_adv", step.supervised_loss("adv")),
            step.term("consistency_js", values, weight=opts.lam, mask=mask)]
