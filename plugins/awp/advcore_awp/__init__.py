"""AWP: adversarial weight perturbation (Wu et al., NeurIPS 2020), around any objective.

Before the update, a proxy copy of the model (synced every step, its own BatchNorm
statistics) takes one ascent step on the active objective's full training loss. Each
weight tensor with >= 2 dims moves by gamma * ||w|| * g / ||g|| (layer-wise, Frobenius
norms; biases and BN untouched). The wrapped update (loss, backward, optimizer step with
weight decay) then runs at the perturbed weights, and exactly the same perturbation is
subtracted afterwards, so only the update itself stays in the weights.
"""

from __future__ import annotations

import copy

import torch
from pydantic import Field

from advcore import PluginInfo, PluginOptions, compose_loss, hookimpl

NAME = "awp"


class Options(PluginOptions):
    gamma: float = Field(0.01, ge=0, description="relative size of the weight perturbation (AT-AWP 0.01; "
                                                 "TRADES-AWP 5e-3)")
    warmup: int = Field(0, ge=0, description="epochs trained without perturbation first (TRADES-AWP: 9, which is "
                                             "the authors' --awp-warmup 10 counted from 1)")


def perturbed_weights(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """The tensors AWP moves: trainable weights with at least two dimensions (conv, linear)."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad and p.dim() > 1 and "weight" in n]


def proxy_of(run, model: torch.nn.Module) -> torch.nn.Module:
    """The proxy copy, made once and loaded with the model's current state every step."""
    proxy = run.stash.get(NAME)
    if proxy is None:
        proxy = run.stash[NAME] = copy.deepcopy(model)
    proxy.load_state_dict(model.state_dict())
    return proxy.train()


def weight_perturbation(run, step) -> dict[str, torch.Tensor]:
    """v_l = ||w_l|| * g_l / ||g_l||, g = gradient of the objective's loss on a proxy copy."""
    proxy = proxy_of(run, run.model)
    names, params = zip(*perturbed_weights(proxy))
    loss = compose_loss(run, step.with_model(proxy))
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
    if run.world_size > 1:  # every rank must move the weights alike: the global batch's gradient
        grads = averaged_over_ranks(run, grads)
    step.record("awp.proxy_loss", loss.detach())
    return {name: (w.detach().norm() / (g.norm() + 1e-20)) * g for name, w, g in zip(names, params, grads)}


def averaged_over_ranks(run, grads: list[torch.Tensor]) -> list[torch.Tensor]:
    flat = run.global_sum(torch.cat([g.reshape(-1) for g in grads])) / run.world_size
    return [part.view_as(g) for part, g in zip(flat.split([g.numel() for g in grads]), grads)]


def shift(model: torch.nn.Module, v: dict[str, torch.Tensor], scale: float) -> None:
    with torch.no_grad():
        for name, p in perturbed_weights(model):
            if name in v:
                p.add_(v[name], alpha=scale)


@hookimpl
def advcore_plugin_info():
    return PluginInfo(summary="AWP: adversarial weight perturbation around the update of any objective",
                      options=Options,
                      chance_hint="AWP's perturbation is too large for this network (gamma 0.01 stalls the small "
                                  "BN-free digits CNN at chance); lower options.awp.gamma (<= 0.002) or set "
                                  "options.awp.warmup=2 (docs/methods/awp.md)")


@hookimpl(wrapper=True)
def advcore_update(run, step):
    opts = run.options[NAME]
    if step.epoch < opts.warmup:
        return (yield)
    v = weight_perturbation(run, step)
    shift(run.model, v, opts.gamma)
    step.clear_logits()
    try:
        return (yield)
    finally:
        shift(run.model, v, -opts.gamma)
        step.clear_logits()
