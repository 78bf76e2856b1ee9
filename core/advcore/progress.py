"""Progress bars for training epochs and long evaluations, on an interactive stderr only.

The one tqdm wrapper of advcore: the training bar (with the running loss and tqdm's ETA),
the per-epoch evaluation's bar and the evaluation attacks' bars all come from here. A leaf
module (it imports nothing from advcore), so the evaluation attacks and the AutoAttack
runner can both use it without importing each other.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Iterable

__all__ = ["progress_bar", "show_values", "POSTFIX_EVERY"]

POSTFIX_EVERY = 10
"""Batches between updates of a bar's running values (one redraw each; the ETA updates every batch)."""


def progress_bar(iterable: Iterable, total: int, desc: str, enabled: bool = True):
    """tqdm on an interactive stderr (ADVCORE_PROGRESS=0 turns it off, =1 forces it on);
    otherwise ``iterable`` itself."""
    setting = os.environ.get("ADVCORE_PROGRESS", "auto")
    if not enabled or setting == "0" or (setting != "1" and not sys.stderr.isatty()):
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


def show_values(bar: Any, **values: str) -> None:
    """Show ``key=value`` beside a bar from ``progress_bar`` (nothing when bars are off)."""
    set_postfix = getattr(bar, "set_postfix", None)
    if set_postfix is not None:
        set_postfix(values, refresh=True)
