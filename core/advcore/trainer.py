"""Former home of the training loop, kept so code written against advcore.trainer still runs.

Everything now lives in ``advcore.engine`` (run building, one step, the per-epoch evaluation,
checkpoints and the loop in engine/{build,step,epoch_eval,checkpoints,loop}.py; signals, metrics, the model spec and the optimizer
in their own modules); import from there.
"""

from .engine import *  # noqa: F401,F403 - the names advcore.trainer exported
from .engine import __all__  # noqa: F401
