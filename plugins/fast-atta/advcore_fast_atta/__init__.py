"""Fast ATTA adversary (Zheng et al. 2020, as used in Liu et al. App. C.2 Alg. 1).

Each training sample keeps its perturbation across epochs; a visit takes one (``steps``)
projected signed-gradient step of size alpha from it on the active objective's inner loss
and stores the result back. The cache lives in the padded augmentation frame (C, H+2p, W+2p), so a
sample's random crop and flip select and restore the matching window. As in the code of
paper 004: perturbations (not images) are cached, a first visit starts from U[-eps, eps]
over the whole frame (unclipped), and the step runs in the objective's model mode.
The pre-step input x + cached delta is left in ``step.examples["attack_start"]``: the 004 code
takes its adaptive target from the forward at that point (reference-notes 10.6 pitfall 1).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from advcore import Budget, PluginInfo, PluginOptions, hookimpl
from advcore.attacks import as_budget, input_gradient, project
from advcore.errors import ConfigError

from .frame import FrameWindow

NAME = "fast-atta"
DELTA = "fast-atta.delta"
VISITED = "fast-atta.visited"


class Options(PluginOptions):
    alpha: Budget | None = Field(None, gt=0, le=1, description="step size (e.g. 4/255); none = alpha_ratio * each sample's eps")
    alpha_ratio: float = Field(0.5, gt=0, description="step as a multiple of eps when alpha is none "
                                                      "(0.5: 4/255 at eps 8/255, the paper's)")
    steps: int = Field(1, ge=1, description="projected steps per visit (ATTA-1; the ATTA code also has 3 and 10)")
    init: Literal["uniform", "normal"] = Field(
        "uniform", description="first-visit perturbation: uniform U[-eps, eps] (004 code) or 0.001 N(0, 1) (ATTA)")
    reset_every: int = Field(0, ge=0, description="forget all perturbations every N epochs (ATTA: 10); 0 = never")


def caches(run, channels: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-sample perturbation frames [N, C, Hp, Wp] and first-visit flags [N] in ``run.state``."""
    aug = run.augment
    pad = aug.padding if aug is not None else 0
    delta = run.state.tensor(DELTA, (channels, size + 2 * pad, size + 2 * pad))
    visited = run.state.tensor(VISITED, (), dtype=torch.bool, fill=False)
    return delta, visited


def fresh_frames(shape: tuple[int, ...], eps: torch.Tensor, init: str) -> torch.Tensor:
    """First-visit perturbations for whole frames: U[-eps_i, eps_i] or 0.001 N(0, 1)."""
    if init == "normal":
        return 0.001 * torch.randn(shape, device=eps.device)
    return (torch.rand(shape, device=eps.device) * 2 - 1) * eps.view(-1, *([1] * (len(shape) - 1)))


def step_sizes(opts: Options, eps: torch.Tensor) -> torch.Tensor:
    return eps * opts.alpha_ratio if opts.alpha is None else torch.full_like(eps, opts.alpha)


@hookimpl
def advcore_plugin_info():
    return PluginInfo(summary="fast ATTA: one cached projected step per visit, perturbations kept across epochs",
                      roles=("adversary",), options=Options)


def _stash(run) -> dict:
    return run.stash.setdefault(NAME, {"last_reset": -1})


@hookimpl(tryfirst=True)  # refuse L2 before other plugins' run-start work
def advcore_on_run_start(run):
    if run.norm != "Linf":  # cube starts and signed steps on cached perturbations: the Linf construction
        raise ConfigError(f"{NAME} supports attack.norm=Linf only; use the default pgd adversary for {run.norm}")
    caches(run, *run.train_set.images.shape[1:3])


@hookimpl
def advcore_on_epoch_start(run, epoch):
    """Forget every perturbation at epochs reset_every, 2*reset_every, ... (once, also across a resume)."""
    every, state = run.options[NAME].reset_every, _stash(run)
    if every and epoch > 0 and epoch % every == 0 and state["last_reset"] != epoch:
        caches(run, *run.train_set.images.shape[1:3])[1].fill_(False)
        state["last_reset"] = epoch


@hookimpl
def advcore_state_dict(run):
    return {NAME: {"json": {"last_reset": _stash(run)["last_reset"]}}}


@hookimpl
def advcore_load_state_dict(run, state):
    saved = state.get(NAME, {}).get("json", {})
    _stash(run)["last_reset"] = int(saved.get("last_reset", -1))


@hookimpl
def advcore_generate_adversarial(run, step, objective):
    opts = run.options[NAME]
    delta, visited = caches(run, step.x.shape[1], step.x.shape[-1])
    index = step.index.to(delta.device)
    window = FrameWindow.of(run.augment, step)
    frames = delta[index].to(step.x.device)
    new = ~visited[index].to(step.x.device)
    first_visits = int(new.sum())  # the step's one host sync here, also the epoch's record
    if first_visits:
        frames[new] = fresh_frames(frames[new].shape, step.eps[new], opts.init)
    start = step.x + window.crop_of(frames)  # a first visit is not clipped (004 code)
    step.examples["attack_start"] = start.detach()  # the cached, pre-step input (adaptive-targets source=attack_start)
    target = objective.target(step.model, step.x, step.y)
    alpha = as_budget(step_sizes(opts, step.eps), start)
    adv = start
    for _ in range(opts.steps):
        grad, _ = input_gradient(step.model, adv, target, objective.loss)
        adv = project(adv.detach() + alpha * grad.sign(), step.x, step.eps)
    delta[index] = window.paste(adv - step.x, frames).to(delta.device)  # repeated indices (views): one write wins
    visited[index] = True
    step.record("fast-atta.first_visits", first_visits / step.size)
    return adv
