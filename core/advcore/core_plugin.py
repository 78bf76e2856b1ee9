"""The core's own hook implementations: the default update and the loss reduction.

Registered in every manager (as ``advcore.core``); ``trylast`` so plugins can wrap or
replace it.
"""

from __future__ import annotations

import torch

from .hookspecs import hookimpl
from .step import LossTerm, Step


def reduce_terms(terms: list[LossTerm], weights: torch.Tensor | None) -> torch.Tensor:
    """sum_t weight_t * sum_i w_i l_ti / sum_i w_i, each term over its own mask."""
    total = None
    for term in terms:
        w = torch.ones_like(term.values) if weights is None else weights.to(term.values.dtype)
        if term.mask is not None:
            w = w * term.mask.to(w.dtype)
        denom = w.sum()
        value = (w * term.values).sum() / denom.clamp_min(1e-12) if denom > 0 else term.values.sum() * 0.0
        total = term.weight * value if total is None else total + term.weight * value
    if total is None:
        raise RuntimeError("no plugin contributed a loss term")
    return total


def compose_loss(run, step: Step) -> torch.Tensor:
    """Collect the loss terms and sample weights for ``step`` and reduce them to a scalar."""
    step.terms = run.hooks.loss_terms(run, step)
    step.weights = run.hooks.sample_weights(run, step)
    step.loss = reduce_terms(step.terms, step.weights)
    return step.loss


@hookimpl(trylast=True)
def advcore_update(run, step: Step) -> torch.Tensor:
    step.model.train()
    loss = compose_loss(run, step)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if run.config.optim.grad_clip:
        torch.nn.utils.clip_grad_norm_(step.model.parameters(), run.config.optim.grad_clip)
    run.optimizer.step()
    return loss.detach()
