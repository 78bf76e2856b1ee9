"""Progress bars for long evaluations, on an interactive stderr only.

A leaf module (it imports nothing from advcore), so the evaluation attacks and the AutoAttack
runner can both use it without importing each other.
"""

from __future__ import annotations

import os
import sys
from typing import Iterable

__all__ = ["progress_bar"]


def progress_bar(iterable: Iterable, total: int, desc: str, enabled: bool = True):
    """tqdm on an interactive stderr (ADVCORE_PROGRESS=0 turns it off, =1 forces it on)."""
    setting = os.environ.get("ADVCORE_PROGRESS", "auto")
    if not enabled or setting == "0" or (setting != "1" and not sys.stderr.isatty()):
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)
