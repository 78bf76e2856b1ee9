"""The core's own hook implementations: the default update and the loss reduction.

Registered in every manager (as ``advcore.core``); ``trylast`` so plugins can wrap or
replace it.
"""

from __future__ import annotations

import torch

from ..attacks import set_mode
from .hookspecs import hookimpl
from .step import LossTerm, Step


def reduce_terms(terms: list[LossTerm], weights: torch.Tensor | dict | None, world_size: int = 1) -> torch.Tensor:
    """sum_t weight_t * sum_i w_ti l_ti / sum_i w_ti, each term over its own mask.

    ``weights`` is one tensor [B] for every term (w_ti = w_i), a dict {term name: tensor or
    None} for weights that target named terms (a missing or None entry: w_ti = 1), or None.
    A term whose weights are all zero contributes 0 (still attached to the graph). With
    ``world_size`` > 1 processes the sums over i run over the *global* batch: each rank
    divides its share by the rank-average denominator, and DDP averages the gradients.
    """
    if not terms:
        raise RuntimeError("no plugin contributed a loss term")
    if isinstance(weights, dict) and all(v is None for v in weights.values()):
        weights = None
    if world_size == 1 and weights is None and all(t.mask is None for t in terms):  # plain means
        means = [t.values.mean() if t.weight == 1.0 else t.weight * t.values.mean() for t in terms]
        total = means[0]  # a weight of 1 costs no multiplication (one op and one graph node less a step)
        for mean in means[1:]:
            total = total + mean
        return total
    ws = []
    for term in terms:
        tw = weights.get(term.name) if isinstance(weights, dict) else weights
        w = torch.ones_like(term.values) if tw is None else tw.to(term.values.dtype)
        if term.mask is not None:
            w = w * term.mask.to(w.dtype)
        ws.append(w)
    denoms = torch.stack([w.sum() for w in ws])
    if world_size > 1:  # summed over ranks here: the kernel does not import the runtime layer
        denoms = denoms.detach().clone()
        torch.distributed.all_reduce(denoms)
        denoms = denoms / world_size
    total = None
    for term, w, denom in zip(terms, ws, denoms):
        value = term.weight * ((w * term.values).sum() / denom.clamp_min(1e-12))  # no host sync on the GPU
        total = value if total is None else total + value
    return total


def compose_loss(run, step: Step) -> torch.Tensor:
    """Collect the loss terms and sample weights for ``step`` and reduce them to a scalar."""
    step.terms = run.hooks.loss_terms(run, step)
    step.weights = run.hooks.sample_weights(run, step)
    step.loss = reduce_terms(step.terms, step.weights, run.world_size)
    return step.loss


@hookimpl(trylast=True)
def advcore_update(run, step: Step) -> torch.Tensor:
    set_mode(step.model, True)
    loss = compose_loss(run, step)
    run.hooks.observe_loss(run, step)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if run.config.optim.grad_clip:
        torch.nn.utils.clip_grad_norm_(step.model.parameters(), run.config.optim.grad_clip)
    run.optimizer.step()
    return loss.detach()
