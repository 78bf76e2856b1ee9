"""advcore: adversarial training whose methods are pluggy plugins.

The names here, with the modules ``advcore.attacks``, ``advcore.losses``, ``advcore.errors``
and ``advcore.testing``, are the whole public API for plugin authors (docs/api.md); a
built-in plugin uses nothing else. They load on first use, so ``import advcore`` (and the
command line's ``--help``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "hookimpl": "kernel.hookspecs",
    "PluginInfo": "kernel.plugins",
    "Installed": "kernel.plugins",
    "PluginOptions": "kernel.config",
    "Budget": "kernel.config",
    "RunConfig": "kernel.config",
    "load_config": "kernel.config",
    "AttackObjective": "kernel.step",
    "LossTerm": "kernel.step",
    "Step": "kernel.step",
    "soft_cross_entropy": "kernel.step",
    "TermWeights": "kernel.weights",
    "Run": "kernel.run",
    "SampleState": "kernel.state",
    "Batch": "data.datasets",
    "Dataset": "data.datasets",
    "DataError": "data.datasets",
    "subset_indices": "data.subsets",
    "ranked_subset": "data.subsets",
    "load_checkpoint": "runtime.checkpoint",
    "checkpoint_paths": "runtime.checkpoint",
    "DatasetInfo": "data.datasets",
    "require_features_head": "models.architectures",
    "compose_loss": "kernel.core_plugin",
    "reduce_terms": "kernel.core_plugin",
}
"""Public name -> the module (under ``advcore``) that defines it."""

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    if name == "api":  # the Python API (docs/python-api.md): advcore.api.train/evaluate/attack
        return importlib.import_module(f"{__name__}.api")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'advcore' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
