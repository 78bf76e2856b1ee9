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
    "hookimpl": "hookspecs",
    "PluginInfo": "plugins",
    "Installed": "plugins",
    "PluginOptions": "config",
    "Budget": "config",
    "RunConfig": "config",
    "load_config": "config",
    "AttackObjective": "step",
    "LossTerm": "step",
    "Step": "step",
    "soft_cross_entropy": "step",
    "TermWeights": "weights",
    "Run": "run",
    "SampleState": "state",
    "Batch": "data",
    "Dataset": "data",
    "DataError": "data",
    "subset_indices": "subsets",
    "ranked_subset": "subsets",
    "load_checkpoint": "checkpoint",
    "checkpoint_paths": "checkpoint",
    "DatasetInfo": "data",
    "require_features_head": "models",
    "compose_loss": "core_plugin",
    "reduce_terms": "core_plugin",
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
