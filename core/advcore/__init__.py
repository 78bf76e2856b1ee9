"""advcore: adversarial training whose methods are pluggy plugins.

The names here are the public API for plugin authors.
"""

from .config import Budget, PluginOptions
from .hookspecs import hookimpl
from .plugins import PluginInfo
from .step import AttackObjective, LossTerm, Step, soft_cross_entropy
from .weights import TermWeights

__version__ = "0.1.0"
__all__ = ["AttackObjective", "Budget", "LossTerm", "PluginInfo", "PluginOptions", "Step", "hookimpl",
           "soft_cross_entropy", "TermWeights", "__version__"]
