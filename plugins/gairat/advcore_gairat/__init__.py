"""GAIRAT (Zhang et al., ICLR 2021, "Geometry-aware instance-reweighted adversarial training").

An add-on: examples close to the decision boundary weigh more. kappa_i counts the PGD
iterations at which example i's iterate is still classified correctly (0..K; read through
``advcore_attack_step`` from whichever adversary runs PGD: pgd or fat; a sample FAT has
stopped counts no more). Its weight, as in the authors' ``GAIR.py`` with h = K // 2:

    tanh:     w_i = (1 + tanh(lambda + 5 (h - kappa_i) / h)) / 2
    sigmoid:  w_i = sigmoid(lambda + 5 (h - kappa_i) / h)
    discrete: w_i = (K + 1 - kappa_i) / (K + 1)

normalised to sum to B over the batch (mean 1). Before ``begin_epoch`` (default: half the
run) the weights are 1.
``terms`` restricts them to named loss terms (GAIR-TRADES: ["kl"]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field

from advcore import PluginInfo, PluginOptions, TermWeights, hookimpl
from advcore.errors import ConfigError

NAME = "gairat"
KAPPA = "gairat.kappa"


class Options(PluginOptions):
    lam: float = Field(-1.0, description="lambda of the weight function (authors' --Lambda, default -1)")
    lam_max: float | None = Field(None, description="lambda before begin_epoch and the start of the linear "
                                                    "schedule; none = infinity (all weights equal)")
    schedule: Literal["fixed", "linear"] = Field(
        "fixed", description="fixed: lambda from begin_epoch on; linear: lam_max - (epoch/epochs)(lam_max - lam)")
    begin_epoch: int | None = Field(None, ge=0, description="epochs (0-based) with weights 1 first; none = half "
                                                            "the run's epochs (authors: 60 of 120)")
    weight: Literal["tanh", "sigmoid", "discrete"] = Field("tanh", description="weight assignment function")
    terms: list[str] | None = Field(None, description="loss terms the weights apply to; none = every term "
                                                      "(GAIR-TRADES: [\"kl\"])")


@dataclass
class Counts:
    """kappa of the batch being attacked, tagged with that batch."""

    key: tuple[int, int, int]
    kappa: torch.Tensor


def _key(step) -> tuple[int, int, int]:
    return (step.epoch, step.batch, step.replay)


def begin_of(opts: Options, epochs: int) -> int:
    """The first weighted epoch: ``begin_epoch``, or half the run."""
    return epochs // 2 if opts.begin_epoch is None else opts.begin_epoch


def lambda_at(opts: Options, epoch: int, epochs: int) -> float:
    """The authors' adjust_Lambda: lam_max before the first weighted epoch, then fixed or linear."""
    lam_max = math.inf if opts.lam_max is None else opts.lam_max
    if epoch < begin_of(opts, epochs):
        return lam_max
    if opts.schedule == "linear":
        return lam_max - (epoch / epochs) * (lam_max - opts.lam)
    return opts.lam


def gair_weights(kappa: torch.Tensor, steps: int, lam: float, weight: str = "tanh") -> torch.Tensor:
    """Per-sample weights from kappa, normalised to sum to the batch size."""
    kappa = kappa.float()
    if weight == "discrete":
        w = (steps + 1 - kappa) / (steps + 1)
    else:
        h = steps // 2
        z = lam + 5.0 * (h - kappa) / h
        w = (torch.tanh(z) + 1) / 2 if weight == "tanh" else torch.sigmoid(z)
    return w * (w.numel() / w.sum().clamp_min(1e-12))


@hookimpl
def advcore_plugin_info():
    return PluginInfo(summary="GAIRAT: weight examples by how many PGD steps they stay correct (near the "
                              "boundary counts more)", options=Options)


@hookimpl
def advcore_on_run_start(run):
    opts = run.options[NAME]
    if opts.weight != "discrete" and run.config.attack.steps < 2:
        raise ConfigError(f"options.gairat.weight={opts.weight} needs attack.steps >= 2 (it divides by steps // 2), "
                          f"got {run.config.attack.steps}; raise attack.steps or use weight=discrete")
    if opts.schedule == "linear" and opts.lam_max is None:
        raise ConfigError("options.gairat.schedule=linear needs options.gairat.lam_max (with the default, "
                          "infinity, every weight stays equal); set it, e.g. --set options.gairat.lam_max=1")


@hookimpl
def advcore_attack_step(run, step, attack):
    counts = run.stash.get(NAME)
    if attack.index == 0 or counts is None or counts.key != _key(step):
        counts = run.stash[NAME] = Counts(_key(step), torch.zeros(step.size, device=step.y.device))
    counts.kappa = counts.kappa + (attack.correct & attack.active).float()
    if attack.index == attack.steps - 1:
        run.state.tensor(KAPPA)[step.index] = counts.kappa  # float32 counts, kept per sample
    return None


@hookimpl
def advcore_sample_weights(run, step):
    opts = run.options[NAME]
    lam = lambda_at(opts, step.epoch, run.config.epochs)
    if step.epoch < begin_of(opts, run.config.epochs) or math.isinf(lam):  # burn-in: every weight is 1
        return None
    counts = run.stash.get(NAME)
    if counts is None or counts.key != _key(step):
        if "attack" not in step.examples:
            objective = next((p.name for p in run.plugins if "objective" in p.info.roles), "none")
            raise ConfigError(f"gairat weights adversarial training, but objective '{objective}' makes no "
                              f"adversarial examples; use an adversarial objective, e.g. --plugin pgd-at")
        adversary = next((p.name for p in run.plugins if "adversary" in p.info.roles), "none")
        raise ConfigError(f"gairat got no PGD steps for this batch from adversary '{adversary}'; use an adversary "
                          f"that reports them (--plugin pgd or --plugin fat)")
    w = gair_weights(counts.kappa, step.steps, lam, opts.weight)
    if opts.terms is None:
        return w
    names = [t.name for t in step.terms]
    unknown = [n for n in opts.terms if n not in names]
    if unknown:
        raise ConfigError(f"options.gairat.terms names {', '.join(unknown)}, but this objective's loss terms are "
                          f"{', '.join(names)}; choose among those")
    return TermWeights(w, tuple(opts.terms))


@hookimpl
def advcore_on_epoch_end(run, metrics):
    if KAPPA in run.state:
        metrics["gairat.mean_kappa"] = round(run.state[KAPPA].mean().item(), 4)
