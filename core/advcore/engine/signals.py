"""Stop on SIGINT/SIGTERM after the current step, and the message a stopped run prints."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from ..errors import Interrupted


__all__ = ['StopOnSignal']


class StopOnSignal:
    """Turn the first SIGINT/SIGTERM into a request to stop after the current step.

    A second signal interrupts at once (KeyboardInterrupt), as users expect of Ctrl-C.
    Outside the main thread (e.g. under some test runners) nothing is installed.
    """

    def __init__(self) -> None:
        self.signal: str | None = None
        self._old: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _interrupted(name: str, epoch: int, batch_no: int, out: Path | None) -> Interrupted:
    where = f"epoch {epoch + 1} batch {batch_no + 1}" if batch_no >= 0 else f"the end of epoch {epoch}"
    if out is None:
        return Interrupted(f"stopped by {name} at {where}; no --out directory, so nothing was saved")
    return Interrupted(f"stopped by {name} at {where}; checkpoint written to {out}/checkpoints/last.json; "
                       f"resume with: advcore train --out {out} --resume")
