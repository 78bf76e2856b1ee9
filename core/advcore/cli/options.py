"""Options and argument parsing shared by the built-in commands; nothing here imports torch.

The commands check their input with these before torch loads, so a usage or configuration
error answers at once (docs/errors.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import AdvcoreError

PluginOpt = typer.Option(None, "--plugin", "-p", help="enable a plugin (repeatable)")
SetOpt = typer.Option(None, "--set", "-s", help="override a config key: key.sub=value (repeatable)")


def run_config(plugin, config, sets, base=None, **fields):
    """The run config from a config file, ``--set`` overrides, flags and ``--plugin`` names."""
    from ..kernel.config import load_config

    data_plugins = list(plugin or [])
    cfg = load_config(config, sets or [], base=base, **fields)
    if data_plugins:
        cfg = cfg.model_copy(update={"plugins": list(dict.fromkeys([*cfg.plugins, *data_plugins]))})
    return cfg


ArchOpt = typer.Option(None, "--arch", help="architecture of a plain state dict file (e.g. wrn-28-10, small-cnn)")
DatasetOpt = typer.Option(None, "--dataset", help="dataset of a plain state dict file (default: the run's)")
DataDirOpt = typer.Option(None, "--data-dir", help="folder with the dataset files (default: the run's)")
WidthOpt = typer.Option(None, "--width", help="model.width of a plain state dict file")
NormalizeOpt = typer.Option(False, "--normalize", help="plain state dict trained with dataset mean/std normalisation")
NormOpt = typer.Option(None, "--norm", help="threat model: Linf or L2 (default: the run's attack.norm, else Linf)")
EpsOpt = typer.Option(None, "--eps", help="budget, e.g. 0.1 or 8/255 (default: the run's, else the dataset's)")


def factory_kwargs(sets: Optional[List[str]]) -> dict:
    """``--set model.kwargs.NAME=VALUE`` strings as the factory's keyword arguments."""
    from ..kernel.config import apply_overrides

    bad = [item for item in sets or [] if not item.startswith("model.kwargs.")]
    if bad:
        raise AdvcoreError(f"--set {bad[0]!r}: with --model only model.kwargs.NAME=VALUE can be set")
    return apply_overrides({}, list(sets or [])).get("model", {}).get("kwargs", {})


def parse_eps(text: Optional[str]) -> Optional[float]:
    """``--eps 0.1`` or ``8/255``: a positive number (checked before torch loads)."""
    if text is None:
        return None
    from ..kernel.config import parse_fraction

    try:
        value = parse_fraction(text)
    except ValueError as exc:
        raise AdvcoreError(f"--eps: {exc}") from None
    try:
        value = float(value)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value == value and value != float("inf")):
        raise AdvcoreError(f"--eps {text}: the budget must be a positive number, e.g. 0.1 or 8/255")
    return value


def source_label(path: Path) -> str:
    """The label of a run, checkpoint or eval file in tables and figures."""
    from ..evaluation.evaluate import source_label

    return source_label(path)
