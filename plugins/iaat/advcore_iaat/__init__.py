"""IAAT: instance adaptive adversarial training (Balaji et al., Alg. 1-2, App. E).

Sample selection only: every sample keeps its own radius (in the run's ``attack.norm``) in the per-sample state
store. During warm-up all samples get the uniform radius eps_w; afterwards each visit runs
Alg. 2 (attacks at eps_i + gamma and eps_i pick up / keep / down) and smooths the pick into
the stored radius. The base adversary then attacks with ``step.eps`` = these radii, so IAAT
composes with any objective and adversary. Clean-misclassified samples get radius 0, i.e.
they train on the clean input with ``misclassified="clean"`` (paper Alg. 1); the default
``"code"`` follows the authors' code, which produced the paper's numbers: they keep
(1 - beta) * their stored radius. The search runs in ``run.attack_mode("train")``, and with
``attack_mode="train"`` (default, the code's) IAAT also sets the training attack's published
mode to train, whatever the objective publishes; ``attack.model_mode`` still overrides both.
"""

import dataclasses

from typing import Literal

import torch
from pydantic import Field

from advcore import Budget, PluginInfo, PluginOptions, hookimpl
from advcore.attacks import model_mode

from .radius import attack_step_size, choose_radius, predicts_label, smooth_radius, survives_attack
from .report import radius_histogram, write_radii_csv

NAME = "iaat"
RADIUS = "iaat.radius"
SEEN = "iaat.seen"
CSV_NAME = "iaat-radii.csv"


class Options(PluginOptions):
    warmup: int = Field(5, ge=0, description="epochs trained with the uniform radius before the search starts")
    warmup_eps: Budget | None = Field(None, gt=0, le=1, description="radius during warm-up; default the run's eps")
    gamma: Budget = Field(1.9 / 255, gt=0, description="search step: candidates eps_i + gamma, eps_i, eps_i - gamma")
    beta: float = Field(0.1, gt=0, le=1, description="smoothing: new = beta * picked + (1 - beta) * stored")
    search_steps: int | None = Field(None, ge=1, description="PGD steps of the two search attacks; default attack.steps")
    step_ratio: float = Field(0.2, gt=0, description="per-sample PGD step max(step_ratio * eps_i, attack.step_size)")
    lower_bound: Budget = Field(0.0, ge=0, description="floor applied to the smoothed radius (App. E.2 uses 4/255)")
    misclassified: Literal["clean", "code"] = Field(
        "code", description="code (default, authors' trainer_adaptive.py): misclassified samples keep the smoothed "
                            "radius of the zeroed pick; clean: they train on x (paper Alg. 1)")
    attack_mode: Literal["train", "objective"] = Field(
        "train", description="training attack's mode: train (authors' code, L99) or the objective's published one")
    hist_bins: int = Field(10, ge=1, description="bins of the per-epoch radius histogram over [0, 2 * warm-up eps]")
    export_csv: bool = Field(True, description=f"write RUN/{CSV_NAME} (index,label,radius) at every epoch end")


def warmup_radius(run) -> float:
    o = run.options[NAME]
    return o.warmup_eps if o.warmup_eps is not None else run.eps


@hookimpl
def advcore_plugin_info():
    return PluginInfo(summary="IAAT: per-sample radii from an up/keep/down search, clean loss on misclassified",
                      options=Options)


@hookimpl(wrapper=True)
def advcore_attack_objective(run, step):
    """The code attacks in train mode throughout (reference-notes 2.1, 7.1): republish the objective's mode."""
    objective = yield
    if objective is None or run.options[NAME].attack_mode == "objective":
        return objective
    return dataclasses.replace(objective, mode="train")


@hookimpl
def advcore_select_samples(run, step):
    o = run.options[NAME]
    radius = run.state.tensor(RADIUS)
    seen = run.state.tensor(SEEN, dtype=torch.bool)
    idx, x, y = step.index, step.x, step.y
    with model_mode(step.model, run.attack_mode("train")):
        correct = predicts_label(step.model, x, y)
        if step.epoch < o.warmup:
            train_eps, stored = _warmup(run, o, correct)
        else:
            train_eps, stored = _search(run, step, o, correct, radius[idx])
    radius[idx] = stored
    seen[idx] = True
    step.eps = train_eps
    step.step_size = attack_step_size(train_eps, o.step_ratio, run.step_size)
    step.groups["iaat_correct"] = correct
    step.record("iaat.clean_correct", correct.float().mean())
    step.record("iaat.train_eps", train_eps.mean())


def _warmup(run, o, correct):
    """Uniform eps_w for correct samples, 0 (the clean input) for misclassified ones."""
    eps_w = torch.full(correct.shape, warmup_radius(run), device=correct.device)
    train_eps = eps_w * correct
    stored = train_eps if o.misclassified == "code" else eps_w
    return train_eps, stored


def _search(run, step, o, correct, prev):
    """Alg. 2 with the two attacks run on the whole batch (as the authors' code does)."""
    steps = o.search_steps or step.steps
    kw = dict(step_ratio=o.step_ratio, step_floor=run.step_size, steps=steps, norm=run.norm)
    ok_high = survives_attack(step.model, step.x, step.y, prev + o.gamma, **kw)
    ok_current = survives_attack(step.model, step.x, step.y, prev, **kw)
    picked = choose_radius(prev, ok_high, ok_current, o.gamma)
    if o.misclassified == "code":
        picked = picked * correct
    new = smooth_radius(prev, picked.clamp_min(0.0), o.beta).clamp_min(o.lower_bound)
    step.record("iaat.up", ok_high.float().mean())
    step.record("iaat.down", (~ok_high & ~ok_current).float().mean())
    train_eps = new if o.misclassified == "code" else new * correct
    return train_eps, new


@hookimpl
def advcore_on_epoch_end(run, metrics):
    o = run.options[NAME]
    if RADIUS not in run.state:
        return
    seen = run.state[SEEN]
    radii = run.state[RADIUS][seen]
    top = 2 * warmup_radius(run)
    metrics.update({f"{NAME}.{k}": v for k, v in radius_histogram(radii, top, o.hist_bins).items()})
    if o.export_csv and run.out is not None and run.is_main():
        index = seen.nonzero().squeeze(1)
        write_radii_csv(run.out / CSV_NAME, index, run.train_set.labels[index.cpu()], radii)
