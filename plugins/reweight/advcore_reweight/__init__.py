"""Reweighting (Liu et al., hard adversarial instances, Sec. 6.1): down-weight hard instances.

Each sample's weight is the softmax probability of its true label, detached and normalised to
sum to 1 over the mini-batch. It goes through ``advcore_sample_weights``, so it multiplies
every loss term of whatever objective is active (the core reduces sum(w*l)/sum(w)).
"prob" (paper) uses the adversarial output the loss already computes, so it costs nothing;
"nat_prob" (the authors' README example) uses the clean output, one more forward unless the
objective needs the clean logits anyway. The authors' code also has "comp_prob" (1 - p_y, hard
instances count more), "max_prob" (the largest probability) and their clean/complement twins.

The warm-up defaults to 5 epochs (README ``--warmup_rw 5``, App. D.6): from a random
initialisation, true-label weights have a degenerate fixed point -- the model predicts one
class, only that class's samples keep weight, their loss goes to 0 -- which a digits run from
scratch reaches within one epoch (loss 0.0000, chance accuracy).
"""

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from advcore import PluginInfo, PluginOptions, hookimpl

NAME = "reweight"
CONFORMANCE_OPTIONS = {"warmup": 0}  # the kit's short runs then reach the weighting


class Options(PluginOptions):
    mode: Literal["prob", "nat_prob", "comp_prob", "comp_nat_prob", "max_prob", "comp_max_prob"] = Field(
        "prob", description="prob: adversarial true-label probability (paper); nat_prob: clean one (authors' README); "
                            "comp_*: 1 minus it; max_prob: largest adversarial probability (authors' code)")
    warmup: int = Field(5, ge=0, description="epochs with uniform weights before reweighting starts "
                                             "(README --warmup_rw 5; 0 collapses a run from scratch)")


def mode_weights(logits: torch.Tensor, y: torch.Tensor, mode: str) -> torch.Tensor:
    """The per-sample weight of ``mode`` (authors' code), detached, normalised to sum to 1."""
    probs = F.softmax(logits.detach().float(), dim=1)
    p = probs.amax(dim=1) if mode.endswith("max_prob") else probs.gather(1, y[:, None]).squeeze(1)
    if mode.startswith("comp_"):
        p = 1.0 - p
    return p / p.sum().clamp_min(1e-12)


def true_label_weights(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """softmax(logits)_y per sample, detached, normalised to sum to 1."""
    return mode_weights(logits, y, "prob")


@hookimpl
def advcore_plugin_info():
    return PluginInfo(summary="reweight samples by the true-label probability (hard instances count less)",
                      options=Options,
                      chance_hint="true-label weights fell into their fixed point (the samples already fitted keep "
                                  "all the weight: loss 0, chance accuracy); raise options.reweight.warmup so the model "
                                  "learns first (the ATTA twin on 2048 Fashion-MNIST images collapses with 1 or 2 "
                                  "warm-up epochs of 10 and trains with 5; docs/methods/reweight.md)")


@hookimpl
def advcore_sample_weights(run, step):
    o = run.options[NAME]
    if step.epoch < o.warmup:
        return None
    name = "clean" if "nat" in o.mode or "adv" not in step.examples else "adv"
    w = mode_weights(step.logits(name), step.y, o.mode)
    step.record(f"{NAME}.effective_fraction", 1.0 / (w.numel() * (w * w).sum()))  # 1 = uniform
    return w
