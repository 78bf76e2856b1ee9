"""One training step: the batch's views stacked, the hooks called in their order, one host sync."""

from __future__ import annotations

import math
import torch
from ..runtime import distributed
from ..attacks import set_mode
from ..runtime.ema import update_ema
from ..errors import TrainingError
from ..kernel.run import Run
from ..runtime.speed import step_models
from ..kernel.step import Step

__all__ = ['train_step']

CONSTANTS_KEY = "advcore.step_constants"


def _constant(run: Run, role: str, n: int, value: float | int, like: torch.Tensor) -> torch.Tensor:
    """``torch.full((n,), value)`` on ``like``'s device, reused across steps while nobody changed it.

    A step's ``eps``, ``step_size`` and ``view`` usually stay as made; three small allocations a
    step cost ~50 us of a CPU step here. A plugin may still change them in place: the tensor's
    version counter then moved, and the next step gets a fresh one.
    """
    cache = run.stash.get(CONSTANTS_KEY)
    if cache is None:  # not setdefault: its {} would be built on every call, three a step
        cache = run.stash[CONSTANTS_KEY] = {}
    key = (role, n, value, like.device)  # one tensor per role: eps and step_size may be equal
    t = cache.get(key)
    if t is None or t._version != 0:
        if len(cache) > 16:  # a schedule of budgets makes a new key every epoch
            cache.clear()
        t = cache[key] = torch.full((n,), value, device=like.device)
    return t


def _stack_views(run: Run, batch) -> tuple[torch.Tensor, ...]:
    if not batch.views:  # one view: nothing to concatenate
        view = _constant(run, "view", batch.y.shape[0], 0, batch.y)
        return batch.x, batch.y, batch.index, batch.crop, batch.flip, view
    parts = [batch] + list(batch.views)
    cat = lambda xs: None if xs[0] is None else xs[0] if len(xs) == 1 else torch.cat(xs)  # noqa: E731
    view = torch.cat([torch.full_like(b.y, i) for i, b in enumerate(parts)])
    return (cat([b.x for b in parts]), cat([b.y for b in parts]), cat([b.index for b in parts]),
            cat([b.crop for b in parts]), cat([b.flip for b in parts]), view)


def train_step(run: Run, batch, epoch: int, batch_no: int) -> Step:
    """One batch through selection, generation, targets, update and state updates."""
    x, y, index, crop, flip, view = _stack_views(run, batch)
    n = y.shape[0]
    models = step_models(run)
    step = Step(run=run, model=models.attack, train_model=None if models.train is models.attack else models.train,
                x=x, y=y, index=index, epoch=epoch, batch=batch_no,
                eps=_constant(run, "eps", n, float(run.eps), x),
                step_size=_constant(run, "step_size", n, float(run.step_size), x),
                steps=run.config.attack.steps, view=view, num_views=run.views, crop=crop, flip=flip)
    run.hooks.select_samples(run, step)
    for replay in range(run.replays):
        step.replay = replay
        step.examples = {"clean": x}
        step.targets, step.terms = {}, []
        step.clear_logits()
        objective = run.hooks.attack_objective(run, step)
        if objective is not None:
            set_mode(run.model, run.attack_mode(objective.mode) == "train")
            adv = run.hooks.generate_adversarial(run, step, objective)
            step.examples["attack"] = step.examples["adv"] = adv.detach()
            set_mode(run.model, True)  # the mode of everything that follows (selection passes restore theirs)
        run.hooks.derive_examples(run, step)
        run.hooks.adapt_targets(run, step)
        loss = run.hooks.update(run, step)
        step.loss_value = loss.item()  # the step's one host sync: the NaN check and train_loss share it
        if not math.isfinite(step.loss_value):
            terms = ", ".join(f"{t.name}={t.values.mean().item():.4g}" for t in step.terms)
            raise TrainingError(
                f"loss became {step.loss_value} at epoch {epoch} batch {batch_no} ({terms}); lower the learning "
                f"rate or check the plugin options, then resume from the last good checkpoint"
            )
        run.hooks.after_step(run, step)
        if run.world_size > 1:
            distributed.sync_state(run.state, index)  # every rank gets the rows the others wrote
        step.clear_logits()
        run.global_step += 1
        update_ema(run)
    if run.scheduler is not None:  # once per batch: every replay of a batch (Free AT) shares its learning rate
        run.scheduler.step()
    return step
