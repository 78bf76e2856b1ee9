"""RAAT (Wang et al. 2026): reduced perturbations for boundary samples plus the DICAR term.

RAAT claims no exclusive role. The supervised term belongs to the objective, which trains on
``examples["adv"]``: with the default pgd-at that is CE (RAAT); with ``--plugin mart`` it is
MART's boosted CE plus MART's KL on the untouched ``examples["attack"]`` (RAAT++, Table 4).
RAAT itself (1) asks for two augmented views of every sample, (2) splits the rows into
non-boundary / boundary / misclassified from eval-mode predictions and puts the reduced sample
x'' into the boundary rows of ``examples["adv"]``, and (3) adds lam * DICAR-JS over the pairs
whose two views are both classified correctly.

RAAT# (Sec. 5.3, the authors' ``RAAT#_Code`` on ReBAT) is three options on top:
``indicators="ema"`` takes the split from the run's weight average (``ema.decay=0.999``, the
core's EMA, checkpointed as ``ema.*``), ``ce_views="first"`` trains the supervised terms on
the first view only (sample weight 0 on the second view's rows; the JS term lives on
first-view rows, so it is untouched) and ``dicar_start`` switches DICAR on at a warm-up epoch.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
from pydantic import Field

from advcore import PluginInfo, PluginOptions, hookimpl
from advcore.errors import ConfigError, PluginError

from .dicar import dicar_js, mixing_weights, step_generator
from .split import attacked_reduction, scaled_reduction, split_rows

NAME = "raat"
GROUPS = ("boundary", "non_boundary", "misclassified")


class Options(PluginOptions):
    eta: float = Field(0.1, gt=0, lt=1, description="boundary range: the reduced budget is eta * eps")
    lam: float = Field(1.0, ge=0, description="weight of the DICAR Jensen-Shannon term")
    gamma: float = Field(0.75, gt=0, description="mixing weights follow Beta(gamma, gamma)")
    dicar: Literal["code", "paper"] = Field(
        "code", description="code: one weight max(l,1-l) per batch, mixed logits, T=0.5; "
                            "paper: a weight per sample, mixed probabilities, no temperature")
    temperature: Optional[float] = Field(
        None, gt=0, description="softmax temperature of the JS term; default 0.5 (dicar=code) or 1 (dicar=paper)")
    reduced: Literal["scaled", "attack"] = Field(
        "scaled", description="x'' = x + eta*(x'-x) (code) or a new attack within eta*eps (paper Eq. 8)")
    boundary: Literal["code", "paper"] = Field(
        "code", description="code: correct at x, wrong at x' and at x''; paper (Eq. 9): correct at x, wrong at x''")
    misclassified: Literal["adv", "clean"] = Field(
        "adv", description="what misclassified rows train on: x' (standard risk) or x (MMA-style)")
    indicators: Literal["model", "ema"] = Field(
        "model", description="model: split from the trained model in eval mode (RAAT); "
                             "ema: from the weight average, needs ema.decay (RAAT#: 0.999)")
    ce_views: Literal["both", "first"] = Field(
        "both", description="supervised terms on both views' rows (RAAT) or on the first view only (RAAT#)")
    dicar_start: int = Field(0, ge=0, description="first epoch (from 0) with the DICAR term (RAAT#: 105 of 200)")




def _options(run) -> Options:
    return run.options[NAME]


def _pairs(step) -> int:
    """B, the number of samples; rows j and j + B are the two views of sample j."""
    if step.num_views < 2:
        raise PluginError("raat needs two views of every sample but the batch has one; "
                          "do not override advcore_data_views to return 1 alongside raat")
    return step.size // step.num_views


@hookimpl
def advcore_plugin_info():
    return PluginInfo(summary="RAAT: eta*eps perturbation for boundary samples + DICAR JS on two views "
                              "(with --plugin mart: RAAT++)", options=Options)


@hookimpl
def advcore_data_views():
    return 2


@hookimpl
def advcore_on_run_start(run):
    if _options(run).indicators == "ema" and run.weight_average is None:
        raise ConfigError("raat indicators=ema needs the weight average: add --set ema.decay=0.999 "
                          "(RAAT#), or use indicators=model")


def _indicator_model(run, step):
    """The network whose eval-mode predictions split the rows: the model or its average (RAAT#)."""
    return run.weight_average if _options(run).indicators == "ema" else step.model


@hookimpl
def advcore_derive_examples(run, step):
    """Split the rows and put x'' into the boundary rows of examples["adv"]."""
    if "attack" not in step.examples:
        objective = next((p.name for p in run.plugins if "objective" in p.info.roles), "in use")
        raise PluginError(f"raat needs adversarial examples but the objective '{objective}' makes none; "
                          f"use an adversarial objective (pgd-at, mart, trades, ...) with raat")
    opts = _options(run)
    _pairs(step)
    x, x_adv = step.x, step.examples["attack"]
    if opts.reduced == "scaled":
        x_reduced = scaled_reduction(x, x_adv, opts.eta)
    else:
        x_reduced = attacked_reduction(run, step, opts.eta)
    split = split_rows(_indicator_model(run, step), x, x_adv, x_reduced, step.y, opts.boundary)
    for group in GROUPS:
        mask = getattr(split, group)
        step.groups[f"{NAME}.{group}"] = mask
        step.record(f"{NAME}.{group}", mask.sum(), "sum")

    train_on = {"boundary": (split.boundary, x_reduced)}
    if opts.misclassified == "clean":
        train_on["misclassified"] = (split.misclassified, x)
    adv = step.examples["adv"]
    if any(mask.any() for mask, _ in train_on.values()):
        adv = adv.clone()  # a new tensor: examples["attack"] keeps the full adversarial example
        for mask, source in train_on.values():
            adv[mask] = source[mask].to(adv.dtype)
        step.examples["adv"] = adv


@hookimpl
def advcore_loss_terms(run, step):
    """lam * JS per pair, stored on the first-view row of each pair whose views are both correct.

    The core averages a masked term over its mask, i.e. sum_I JS / |I|: the code's batchmean.
    """
    opts = _options(run)
    b = _pairs(step)
    correct = ~step.groups[f"{NAME}.misclassified"]
    pairs = (correct[:b] & correct[b:2 * b]).nonzero().squeeze(1)
    values = torch.zeros(step.size, device=step.x.device)
    mask = torch.zeros(step.size, dtype=torch.bool, device=step.x.device)
    step.record(f"{NAME}.dicar_pairs", float(pairs.numel()), "sum")
    if pairs.numel() == 0 or step.epoch < opts.dicar_start:  # the code skips the term: no forward passes
        return [step.term("dicar_js", values, weight=opts.lam, mask=mask)]
    generator = step_generator(run.config.seed, run.global_step, run.rank)
    w_all = mixing_weights(b, opts.gamma, opts.dicar, generator).to(step.x.device)
    w = w_all[pairs]
    adv = step.examples["attack"]
    wx = w.to(adv.dtype).view(-1, *([1] * (adv.dim() - 1)))
    mixed = wx * adv[pairs] + (1 - wx) * adv[pairs + b]
    clean = step.logits("clean")
    temperature = opts.temperature or (0.5 if opts.dicar == "code" else 1.0)
    js = dicar_js(step.model(mixed), clean[pairs], clean[pairs + b], w, opts.dicar, temperature)
    values = values.to(js.dtype).index_copy(0, pairs, js)
    mask[pairs] = True
    return [step.term("dicar_js", values, weight=opts.lam, mask=mask)]


@hookimpl
def advcore_sample_weights(run, step):
    """RAAT#: weight 1 on the first view's rows, 0 on the second's (CE on the first augmentation)."""
    if _options(run).ce_views == "both":
        return None
    b = _pairs(step)
    w = torch.zeros(step.size, device=step.x.device)
    w[:b] = 1.0
    return w
