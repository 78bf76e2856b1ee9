"""HE: hypersphere embedding for adversarial training (Pang et al., NeurIPS 2020).

The model's linear head becomes a bias-free cosine head that outputs s*cos(theta) (FN + WN,
Eq. 4-5), so every objective's CE/KL and every adversary (training and evaluation) see the
scale s without knowing about HE. The angular margin m (AM, Eq. 6) is subtracted at the true
class only in supervised training terms, never in attacks or evaluation.
"""

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field, model_validator

from advcore import PluginInfo, PluginOptions, hookimpl
from advcore import require_features_head

from .head import HypersphereHead

NAME = "he"

__all__ = ["HypersphereHead", "Options", "margin_logits"]


class Options(PluginOptions):
    s: float = Field(15.0, gt=0, description="scale of the cosine logits (paper default 15)")
    m: float = Field(0.2, ge=0, description="angular margin subtracted from the true-class cosine in training")
    variant: Literal["he", "m-he"] = Field(
        "he", description="he: logits s*cos(theta); m-he: logits -s*theta via arccos (Sec. 3.5)")
    feature_norm: bool = Field(True, description="FN: L2-normalise the penultimate features")
    weight_norm: bool = Field(True, description="WN: project class weight rows onto the unit sphere")
    angular_margin: bool = Field(True, description="AM: apply the margin m in the training loss")

    @model_validator(mode="after")
    def _angle_needs_both_norms(self) -> "Options":
        if self.variant == "m-he" and not (self.feature_norm and self.weight_norm):
            raise ValueError("variant m-he needs feature_norm and weight_norm on (theta is an angle only then)")
        return self


def margin_logits(logits: torch.Tensor, target: torch.Tensor, s: float, m: float) -> torch.Tensor:
    """Subtract s*m at the true class; soft targets [B, K] subtract s*m*target per class."""
    weights = F.one_hot(target, logits.shape[1]) if target.dim() == 1 else target
    return logits - (s * m) * weights.to(logits.dtype)


@hookimpl
def advcore_plugin_info():
    return PluginInfo(summary="HE: cosine head s*cos(theta) (FN+WN, no bias), margin m in the training loss",
                      roles=("head",), options=Options)


@hookimpl
def advcore_configure_model(run, model):
    """Swap ``model.head`` for the hypersphere head; works with evaluation's light context."""
    require_features_head(model, NAME)  # the model protocol of advcore.models
    head = model.head
    o = run.options[NAME]
    model.head = HypersphereHead.from_linear(head, s=o.s, variant=o.variant, feature_norm=o.feature_norm,
                                             weight_norm=o.weight_norm)
    model.advcore_head = model.head.describe()


@hookimpl
def advcore_adjust_logits(run, logits, target):
    o = run.options[NAME]
    if not o.angular_margin or o.m == 0:
        return None
    return margin_logits(logits, target, o.s, o.m)
