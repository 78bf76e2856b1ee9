"""Helpers for testing plugins on a tiny model and batch (also used by advcore's own tests).

``tiny_run`` builds a real run (digits data, a small CNN, the real plugin manager) and
``tiny_batch`` a fixed batch from its training set, so a plugin's hooks can be exercised
one step at a time with ``advcore.trainer.train_step``.
"""

from __future__ import annotations

from typing import Any

import torch

from .config import RunConfig
from .data import Batch
from .run import Run
from .trainer import build_run

__all__ = ["tiny_config", "tiny_run", "tiny_batch"]


def tiny_config(plugins: list[str], options: dict[str, dict[str, Any]] | None = None, **overrides: Any) -> RunConfig:
    """A CPU config on digits with a narrow small CNN; ``overrides`` are top-level fields or sections."""
    data: dict[str, Any] = {
        "plugins": plugins, "options": options or {}, "epochs": 2, "device": "cpu",
        "data": {"dataset": "digits", "batch_size": 32, "subset": 200},
        "model": {"arch": "small-cnn", "width": 8},
        "eval": {"n": 64, "pgd_steps": 5},
        "attack": {"steps": 3},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return RunConfig.model_validate(data)


def tiny_run(plugins: list[str], options: dict[str, dict[str, Any]] | None = None, out=None, **overrides: Any) -> Run:
    """A run ready for ``train_step``; ``run_start`` hooks have been called."""
    run, loader = build_run(tiny_config(plugins, options, **overrides), out)
    run.stash["advcore.loader"] = loader
    run.hooks.on_run_start(run)
    return run


def tiny_batch(run: Run, size: int = 16, start: int = 0) -> Batch:
    """The first ``size`` training samples, unaugmented, as a Batch (views copied if asked for)."""
    index = torch.arange(start, start + size)
    x = run.train_set.images[index].float().div(255).to(run.device)
    y = run.train_set.labels[index].to(run.device)
    views = [Batch(x=x.clone(), y=y, index=index, crop=None, flip=None, views=[]) for _ in range(run.views - 1)]
    return Batch(x=x, y=y, index=index.to(run.device), crop=None, flip=None, views=views)
