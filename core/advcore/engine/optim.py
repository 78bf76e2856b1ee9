"""The optimizer and the learning-rate schedule of a run.

The schedule is a real ``torch.optim.lr_scheduler`` object (``run.scheduler``), stepped once
per batch by the engine, so it is PyTorch's arithmetic and its ``state_dict`` that a
checkpoint saves and a resume loads (bit-exact, without re-deriving a formula here).
"""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Any

import torch
from torch.optim import lr_scheduler as sched
from ..kernel.config import RunConfig


__all__ = ['build_optimizer', 'build_scheduler', 'lr_schedule', 'lr_at', 'fast_forward',
           'scheduler_state', 'load_scheduler_state']


def build_optimizer(config: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD with PyTorch's fused update where every parameter allows it (one kernel does each
    parameter's weight decay, momentum and step: a small CNN's optimizer step on the CPU
    takes half the time of the multi-tensor one), else the multi-tensor (foreach) update.

    A checkpoint's optimizer state carries its update rule: a run resumed from one written with
    the foreach update keeps that update, so the resumed run is the run that was interrupted.
    """
    o = config.optim
    params = list(model.parameters())
    dense = all(p.device.type in ("cpu", "cuda") and not p.is_sparse for p in params)
    fused = dense and all(p.is_floating_point() for p in params)
    optimizer = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0,
                                weight_decay=o.weight_decay, fused=True if fused else None,
                                foreach=True if dense and not fused else None)
    if fused:
        keep_buffers_like_parameters(optimizer)
        count_fused_writes(optimizer)
    return optimizer


def count_fused_writes(optimizer: torch.optim.Optimizer) -> None:
    """Move the version counter of every parameter a fused step wrote.

    The fused kernel writes the weights without telling autograd, so ``p._version`` stays put:
    a graph that saved a weight would not notice the change, and a plugin that caches work on a
    weight until its version moves (HE's projected head) would keep a stale copy.
    """
    from torch.autograd.graph import increment_version

    def after_step(opt, args, kwargs) -> None:
        written = [p for group in opt.param_groups if group.get("fused") for p in group["params"]
                   if p.grad is not None]
        if written:
            increment_version(written)

    optimizer.register_step_post_hook(after_step)


def keep_buffers_like_parameters(optimizer: torch.optim.Optimizer) -> None:
    """Make every fused step see a momentum buffer per parameter, laid out like it.

    PyTorch's fused SGD reads a buffer's memory as if it had its parameter's strides, and fails
    when only some parameters have one. A checkpoint's buffers come back contiguous while a
    channels-last network's weights are not (the resumed run then silently diverges), and a
    parameter whose first gradient arrives after the first step has none. Before a step, until
    every parameter has a well-laid-out buffer (and again after ``load_state_dict``), each buffer
    is copied into its parameter's layout and a missing one starts at zero: with no dampening,
    ``0 * momentum + grad`` is the same first update as the per-tensor loop's copy of the gradient.
    """
    ready = False

    def before_step(opt, args, kwargs) -> None:
        nonlocal ready
        if ready:
            return
        complete = True
        for group in opt.param_groups:
            if not group.get("fused") or group["momentum"] == 0:  # no buffers to keep
                continue
            with_grad = [p for p in group["params"] if p.grad is not None]
            complete &= len(with_grad) == len(group["params"])
            started = any("momentum_buffer" in opt.state.get(p, {}) for p in with_grad)
            for p in with_grad:
                buf = opt.state[p].get("momentum_buffer")
                if buf is None:
                    if started:  # fused SGD's own first step makes them all when none exists yet
                        opt.state[p]["momentum_buffer"] = torch.zeros_like(p)
                    else:
                        complete = False
                elif buf.stride() != p.stride():  # load_state_dict already cast dtype and device
                    opt.state[p]["momentum_buffer"] = torch.empty_like(p).copy_(buf)
        ready = complete

    def after_load(opt) -> None:
        nonlocal ready
        ready = False

    optimizer.register_step_pre_hook(before_step)
    optimizer.register_load_state_dict_post_hook(after_load)


def warmup_batches(config: RunConfig, steps_per_epoch: int) -> int:
    """Batches of the linear warm-up (``optim.warmup_epochs`` rounded to whole batches)."""
    return round(config.optim.warmup_epochs * steps_per_epoch)


def build_scheduler(config: RunConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> sched.LRScheduler:
    """The run's schedule over ``epochs * steps_per_epoch`` batches, the warm-up first.

    constant: ConstantLR(1); step: MultiStepLR at the milestone epochs; cosine:
    CosineAnnealingLR to 0; onecycle: OneCycleLR with PyTorch's defaults (lr/25 -> lr ->
    lr/25e4, cosine, ``pct_start``) but momentum left alone. ``optim.warmup_epochs``
    puts a LinearLR from ``warmup_start * lr`` to lr in front (SequentialLR); the schedule
    then runs over the remaining batches, so a step milestone stays at its epoch.
    """
    o = config.optim
    for group in optimizer.param_groups:  # a fresh schedule starts from the configured peak
        group["lr"] = o.lr
        group.pop("initial_lr", None)
    spe = max(steps_per_epoch, 1)
    total = max(config.epochs * spe, 1)
    if o.schedule == "onecycle":
        return sched.OneCycleLR(optimizer, max_lr=o.lr, total_steps=total, pct_start=o.pct_start,
                                anneal_strategy="cos", div_factor=25.0, final_div_factor=1e4, cycle_momentum=False)
    warm = min(warmup_batches(config, spe), total - 1)
    rest = total - warm
    if o.schedule == "constant":
        main: sched.LRScheduler = sched.ConstantLR(optimizer, factor=1.0, total_iters=0)
    elif o.schedule == "step":
        main = sched.MultiStepLR(optimizer, [m * spe - warm for m in o.milestones], o.gamma)
    else:
        main = sched.CosineAnnealingLR(optimizer, T_max=rest)
    if warm <= 0:
        return main
    ramp = sched.LinearLR(optimizer, start_factor=o.warmup_start, end_factor=1.0, total_iters=warm)
    return sched.SequentialLR(optimizer, [ramp, main], milestones=[warm])


def fast_forward(scheduler: sched.LRScheduler, batches: int) -> None:
    """Step a fresh schedule ``batches`` times without training (a checkpoint that saved none,
    or a resume whose schedule changed): the same numbers as a run that trained to there."""
    total = getattr(scheduler, "total_steps", None)  # OneCycleLR refuses steps past its end
    batches = batches if total is None else min(batches, total)
    with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": intended here
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(batches):
            scheduler.step()


def lr_schedule(config: RunConfig, steps_per_epoch: int = 100) -> list[float]:
    """The learning rate of every batch of a run of ``config`` with ``steps_per_epoch`` batches
    (what ``run.scheduler`` gives its optimizer), from the real scheduler on a dummy parameter."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=config.optim.lr)
    scheduler = build_scheduler(config, optimizer, steps_per_epoch)
    lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(config.epochs * max(steps_per_epoch, 1)):
            lrs.append(optimizer.param_groups[0]["lr"])
            scheduler.step()
    return lrs


def lr_at(config: RunConfig, progress: float, steps_per_epoch: int = 100) -> float:
    """Learning rate at ``progress`` epochs into the run (fractional: schedules step per batch),
    for a run with ``steps_per_epoch`` batches: the batch that ``progress`` falls in."""
    lrs = lr_schedule(config, steps_per_epoch)
    return lrs[min(max(int(progress * steps_per_epoch + 1e-9), 0), len(lrs) - 1)]


# -- the scheduler's state in a JSON manifest --------------------------------------------------------

def _encode(value: Any) -> Any:
    if isinstance(value, Counter):  # MultiStepLR's milestones: int keys JSON would turn into strings
        return {"__counter__": [[k, v] for k, v in sorted(value.items())]}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.item()
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__counter__"}:
            return Counter({k: v for k, v in value["__counter__"]})
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def scheduler_state(scheduler: sched.LRScheduler) -> dict[str, Any]:
    """``scheduler.state_dict()`` as plain JSON (floats round-trip exactly through ``json``)."""
    return _encode(scheduler.state_dict())


def load_scheduler_state(scheduler: sched.LRScheduler, state: dict[str, Any]) -> None:
    scheduler.load_state_dict(_decode(state))
