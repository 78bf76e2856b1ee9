"""Adaptive targets (Liu et al., hard adversarial instances, Sec. 6.1, App. C.2 Alg. 1).

Every sample keeps a moving-average target in the per-sample state,
``t <- rho * t + (1 - rho) * softmax(f(x_adv))``, started from one-hot at its first visit after
the warm-up, and trains towards ``beta * onehot(y) + (1 - beta) * t``. During the warm-up the
targets stay one-hot and the state is not touched. The probabilities come from the detached
train-mode logits the loss uses anyway (no extra pass); ``source = "clean"`` averages the clean
output instead (self-adaptive training); ``source = "attack_start"`` averages the output at the
cached pre-step input of fast-atta, as the 004 code does (one more train-mode forward here,
where the code reuses its attack forward). The attack has already run when targets are set, so it
always uses the one-hot label. ``kl`` adds Sec. 6.2's lambda * KL(p(clean) || p(adv)) term, the
clean output as an adaptive target (the paper uses lambda = 6 for fine-tuning).
"""

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from advcore import PluginInfo, PluginOptions, hookimpl
from advcore.attacks import model_mode
from advcore.errors import PluginError
from advcore.losses import kl_from_logits

NAME = "adaptive-targets"
TARGET = f"{NAME}.target"    # [N, K] moving-average target
STARTED = f"{NAME}.started"  # [N] whether the sample has been visited after the warm-up
CONFORMANCE_OPTIONS = {"warmup": 0, "kl": 1.0}  # the conformance kit's short runs then reach every code path


class Options(PluginOptions):
    rho: float = Field(0.9, ge=0, le=1, description="momentum of the moving-average target")
    beta: float = Field(0.1, ge=0, le=1, description="weight of the one-hot label in the training target (1 = one-hot)")
    warmup: int = Field(5, ge=0, description="epochs with fixed one-hot targets before the moving average starts")
    source: Literal["adv", "clean", "attack_start"] = Field(
        "adv", description="output averaged into the target: adversarial after the step (paper Alg. 1), clean "
                           "(self-adaptive training) or the cached pre-step input (004 code; needs fast-atta)")
    kl: float = Field(0.0, ge=0, description="weight lambda of KL(p(clean) || p(adv)) (Sec. 6.2 fine-tuning: 6)")


def update_targets(state, index: torch.Tensor, y: torch.Tensor, probs: torch.Tensor, rho: float,
                   distinct: bool = False) -> torch.Tensor:
    """Move each sample's stored target towards ``probs``; returns the new target per row.

    Rows sharing an index (several views of one sample) are averaged into one update;
    ``distinct=True`` says no index repeats (one view, one process), which skips that grouping.
    """
    k = probs.shape[1]
    targets = state.tensor(TARGET, (k,))
    started = state.tensor(STARTED, (), torch.bool, False)
    if distinct:
        uniq, inv, mean, labels = index, None, probs.float(), y
    else:
        uniq, inv = torch.unique(index, return_inverse=True)
        mean = torch.zeros(uniq.numel(), k, device=probs.device).index_add_(0, inv, probs.float())
        mean /= torch.bincount(inv, minlength=uniq.numel()).clamp_min(1)[:, None].to(mean.dtype)
        labels = torch.empty_like(uniq).scatter_(0, inv, y)
    old = torch.where(started[uniq][:, None], targets[uniq], F.one_hot(labels, k).to(targets.dtype))
    new = rho * old + (1 - rho) * mean.to(targets.dtype)
    targets[uniq] = new
    started[uniq] = True
    return new if inv is None else new[inv]


@hookimpl
def advcore_plugin_info():
    return PluginInfo(summary="moving-average adaptive targets beta*onehot + (1-beta)*t (hard instances)",
                      options=Options)


@hookimpl
def advcore_adapt_targets(run, step):
    o = run.options[NAME]
    if step.epoch < o.warmup:
        return
    k = run.info.num_classes
    if step.replay == 0:  # one update per visit; replays (Free AT) reuse it
        if o.source == "attack_start" and "attack_start" not in step.examples:
            raise PluginError("adaptive-targets source=attack_start needs the fast-atta adversary (the cached "
                              "pre-step input); add --plugin fast-atta or use source=adv")
        name = o.source if o.source == "attack_start" else ("adv" if o.source == "adv" and "adv" in step.examples
                                                              else "clean")
        with model_mode(step.model, "train"):  # the forward the loss reuses (step.logits caches it)
            probs = F.softmax(step.logits(name).detach().float(), dim=1)
        distinct = step.num_views == 1 and run.world_size == 1  # a batch draws each index once
        t = update_targets(run.state, step.index, step.y, probs, o.rho, distinct)
    else:
        t = run.state[TARGET][step.index]
    for example in ("adv", "clean"):
        base = step.targets.get(example, step.y)
        hard = F.one_hot(base, k).to(t.dtype) if base.dim() == 1 else base
        step.targets[example] = o.beta * hard + (1 - o.beta) * t
    step.record(f"{NAME}.target_true_prob", t.gather(1, step.y[:, None]).mean())


@hookimpl
def advcore_loss_terms(run, step):
    o = run.options[NAME]
    if o.kl == 0 or "adv" not in step.examples:
        return None
    return [step.term("kl_clean_adv", kl_from_logits(step.logits("clean"), step.logits("adv")), weight=o.kl)]
