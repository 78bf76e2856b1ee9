"""``advcore train --tensorboard``: each epoch's numeric metrics also go to TensorBoard.

The scalars land in ``<run dir>/tensorboard`` (``tensorboard --logdir <run dir>``) under
the names used in metrics.jsonl, with the epoch as the step. The ``tensorboard`` package
is optional; asking for it without the package is a one-line error.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..errors import ConfigError

__all__ = ["require_tensorboard", "metrics_board"]


def require_tensorboard(out: Path | None):
    """The SummaryWriter class, or a ConfigError saying what to install or add."""
    if out is None:
        raise ConfigError("--tensorboard writes into the run directory; add --out DIR")
    try:
        import tensorboard  # noqa: F401 - torch.utils.tensorboard needs it
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard "
                          "(or train without --tensorboard)") from None
    return SummaryWriter


class _Board:
    def __init__(self, writer):
        self.writer = writer

    def write(self, metrics: dict[str, Any]) -> None:
        for key, value in metrics.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, metrics["epoch"])
        self.writer.flush()


class _NoBoard:
    def write(self, metrics: dict[str, Any]) -> None:
        pass


@contextmanager
def metrics_board(out: Path | None, start_epoch: int, enabled: bool) -> Iterator[_Board | _NoBoard]:
    """A writer of epoch metrics; on resume, scalars from epochs after the checkpoint are dropped."""
    if not enabled:
        yield _NoBoard()
        return
    writer = require_tensorboard(out)(str(out / "tensorboard"), purge_step=start_epoch + 1)
    try:
        yield _Board(writer)
    finally:
        writer.close()
