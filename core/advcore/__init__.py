"""advcore: adversarial training whose methods are pluggy plugins.

The names here are the public API for plugin authors. The torch-backed ones load on first
use (PEP 562), so ``import advcore`` -- and with it ``advcore --help``, ``--version`` and
every usage error -- does not import torch.
"""

from typing import TYPE_CHECKING

from .config import Budget, PluginOptions
from .hookspecs import hookimpl

if TYPE_CHECKING:  # for type checkers and the API docs; at run time they load on first use
    from .plugins import PluginInfo
    from .step import AttackObjective, LossTerm, Step, soft_cross_entropy

__version__ = "0.1.0"
__all__ = ["AttackObjective", "Budget", "LossTerm", "PluginInfo", "PluginOptions", "Step", "hookimpl",
           "soft_cross_entropy", "__version__"]

_LAZY = {"PluginInfo": "plugins", "AttackObjective": "step", "LossTerm": "step", "Step": "step",
         "soft_cross_entropy": "step"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'advcore' has no attribute {name!r}")
