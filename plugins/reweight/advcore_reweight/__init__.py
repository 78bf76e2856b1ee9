"""Reweighting (Liu et al., hard adversarial instances, Sec. 6.1): down-weight hard instances.

Each sample's weight is the softmax probability of its true label, detached and normalised to
sum to 1 over the mini-batch. It goes through ``advcore_sample_weights``, so it multiplies
every loss term of whatever objective is active (the core reduces sum(w*l)/sum(w)).
"prob" (paper) uses the adversarial output the loss already computes, so it costs nothing;
"nat_prob" (the authors' README example) uses the clean output, one more forward unless the
objective needs the clean logits anyway.
"""

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from advcore import PluginInfo, PluginOptions, hookimpl

NAME = "reweight"


class Options(PluginOptions):
    mode: Literal["prob", "nat_prob"] = Field(
        "prob", description="prob: adversarial true-label probability (paper); nat_prob: clean one (authors' README)")
    warmup: int = Field(0, ge=0, description="epochs with uniform weights before reweighting starts")


def true_label_weights(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """softmax(logits)_y per sample, detached, normalised to sum to 1."""
    p = F.softmax(logits.detach().float(), dim=1).gather(1, y[:, None]).squeeze(1)
    return p / p.sum().clamp_min(1e-12)


@hookimpl
def advcore_plugin_info():
    return PluginInfo(summary="reweight samples by the true-label probability (hard instances count less)",
                      options=Options)


@hookimpl
def advcore_sample_weights(run, step):
    o = run.options[NAME]
    if step.epoch < o.warmup:
        return None
    name = "adv" if o.mode == "prob" and "adv" in step.examples else "clean"
    w = true_label_weights(step.logits(name), step.y)
    step.record(f"{NAME}.effective_fraction", (1.0 / (w.numel() * (w * w).sum())).item())  # 1 = uniform
    return w
