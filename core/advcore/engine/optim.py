"""The optimizer and the learning-rate schedule of a run."""

from __future__ import annotations

import math
import torch
from ..kernel.config import RunConfig
from ..kernel.run import Run


__all__ = ['build_optimizer', 'lr_at', 'set_lr']


def build_optimizer(config: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD with the multi-tensor (foreach) update: the same numbers bit for bit as the
    per-tensor loop PyTorch uses by default on the CPU, with one call per operation instead
    of one per parameter (a ResNet-18's step: 2.2 -> 1.5 ms here). CUDA uses it by default."""
    o = config.optim
    params = list(model.parameters())
    foreach = True if all(p.device.type in ("cpu", "cuda") and not p.is_sparse for p in params) else None
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0,
                           weight_decay=o.weight_decay, foreach=foreach)


def lr_at(config: RunConfig, progress: float) -> float:
    """Learning rate at ``progress`` epochs into the run (fractional: schedules step per batch)."""
    o, total = config.optim, config.epochs
    t = min(max(progress / total, 0.0), 1.0)
    if o.schedule == "constant":
        return o.lr
    if o.schedule == "step":
        return o.lr * o.gamma ** sum(progress >= m for m in o.milestones)
    if o.schedule == "cosine":
        return o.lr * 0.5 * (1 + math.cos(math.pi * t))
    # one-cycle (PyTorch's defaults): cosine up from lr/25 to lr, then down to lr/25e4
    low, final = o.lr / 25, o.lr / 25e4
    if t < o.pct_start:
        return low + (o.lr - low) * 0.5 * (1 - math.cos(math.pi * t / o.pct_start))
    return final + (o.lr - final) * 0.5 * (1 + math.cos(math.pi * (t - o.pct_start) / (1 - o.pct_start)))


def set_lr(run: Run) -> None:
    lr = lr_at(run.config, run.global_step / max(run.steps_per_epoch, 1))
    for group in run.optimizer.param_groups:
        group["lr"] = lr
