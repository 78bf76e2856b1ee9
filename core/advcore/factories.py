"""``package.module:callable`` strings, and Python objects handed to the API in one process.

A user's model or dataset is named by the callable that builds it, so a manifest can record
how to rebuild it (``model.factory`` / ``data.dataset``). Objects given to ``advcore.api``
directly get a ``live:`` name that only the process holding them can resolve.
"""

from __future__ import annotations

import importlib
import itertools
import re
from typing import Any, Callable

from .errors import ConfigError

__all__ = ["FACTORY_PATTERN", "is_factory", "load_factory", "register_live"]

FACTORY_PATTERN = re.compile(r"^(live:\d+:[\w.<>-]+|[A-Za-z_][\w.]*:[A-Za-z_][\w.]*)$")
_LIVE: dict[str, Callable[..., Any]] = {}
_COUNTER = itertools.count(1)


def is_factory(text: Any) -> bool:
    """True for ``package.module:name`` (or a ``live:`` name), the form a factory is written in."""
    return isinstance(text, str) and bool(FACTORY_PATTERN.match(text))


def register_live(fn: Callable[..., Any], label: str) -> str:
    """A name under which ``load_factory`` finds ``fn`` in this process."""
    name = f"live:{next(_COUNTER)}:{label}"
    _LIVE[name] = fn
    return name


def load_factory(text: str, key: str) -> Callable[..., Any]:
    """Import ``package.module:attr``; every failure is one ConfigError naming ``key`` and the fix."""
    if text in _LIVE:
        return _LIVE[text]
    if text.startswith("live:"):
        raise ConfigError(f"{key}: {text} was a Python object of another process and cannot be rebuilt; "
                          f"name it as package.module:factory to rebuild it from a checkpoint")
    if not is_factory(text):
        raise ConfigError(f"{key}: {text!r} is not of the form package.module:factory")
    module_name, _, attr = text.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - an import error of the user's module is theirs to fix
        raise ConfigError(f"{key}: cannot import {module_name} ({type(exc).__name__}: {exc}); "
                          f"check the name and that its folder is on PYTHONPATH") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{key}: {module_name} has no {attr!r}; check the name after the colon")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{key}: {text} is a {type(obj).__name__}, not a callable; name a function or class")
    return obj
