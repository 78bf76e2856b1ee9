"""advcore: adversarial training whose methods are pluggy plugins.

The names here are the public API for plugin authors.
"""

from . import api  # train, evaluate and attack any nn.Module (docs/python-api.md)
from .config import Budget, PluginOptions
from .hookspecs import hookimpl
from .plugins import PluginInfo
from .step import AttackObjective, LossTerm, Step, soft_cross_entropy

__version__ = "0.1.0"
__all__ = ["AttackObjective", "Budget", "LossTerm", "PluginInfo", "PluginOptions", "Step", "hookimpl",
           "soft_cross_entropy", "__version__"]
