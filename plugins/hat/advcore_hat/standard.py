"""The standard (non-robust) network that labels HAT's helper examples.

It comes from a checkpoint named in the options, or is trained first with the run's own
data and model config and plugin ``standard``. A trained one lives in ``RUN/hat-standard/``
so a resumed run loads it instead of training it again (an interrupted one is resumed).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

from advcore.errors import ConfigError, Interrupted, PluginError

STD_DIR = "hat-standard"


def standard_config(config, epochs: int):
    """The run's config with plugin ``standard`` only, ``epochs`` epochs and one evaluation at the end."""
    data = config.model_dump(mode="json")
    data.update(plugins=["standard"], options={}, epochs=epochs, init_from=None)
    data["optim"]["milestones"] = [m for m in data["optim"]["milestones"] if m < epochs]
    data["eval"]["every"] = epochs
    return type(config).model_validate(data)


def _finished_epochs(run_dir: Path) -> int | None:
    """Whole epochs saved in ``run_dir`` (a mid-epoch checkpoint counts those before it); None: nothing saved."""
    manifest = run_dir / "checkpoints" / "last.json"
    if not manifest.is_file():
        return None
    try:
        return int(json.loads(manifest.read_text()).get("epoch", 0))
    except (ValueError, OSError, AttributeError):
        return 0


def _log(line: str) -> None:
    print(f"hat: standard network {line}", file=sys.stderr)


def train_standard(run, run_dir: Path, epochs: int) -> Path:
    """Train (or finish training) the standard network into ``run_dir``; returns its checkpoint.

    ``run.train_auxiliary`` leaves the robust run's random streams as they were.
    """
    done = _finished_epochs(run_dir)
    if done is None or done < epochs:
        run.train_auxiliary(standard_config(run.config, epochs), run_dir, resume=done is not None, log=_log)
    return run_dir / "checkpoints" / "last"


def check_compatible(run, manifest: dict, source) -> None:
    """The standard network must take this run's inputs and predict its classes."""
    dataset = manifest.get("config", {}).get("data", {}).get("dataset")
    if dataset != run.config.data.dataset:
        raise ConfigError(f"options.hat.std_checkpoint: {source} was trained on {dataset}, this run uses "
                          f"{run.config.data.dataset}; give a standard network trained on the same data")
    want, got = run.model_spec(), manifest.get("model", {})
    for key in ("num_classes", "in_channels", "image_size"):
        if got.get(key) != want[key]:
            raise ConfigError(f"options.hat.std_checkpoint: {source} has {key}={got.get(key)} but this run needs "
                              f"{want[key]}; give a standard network for this dataset")


def load_standard(run, path) -> torch.nn.Module:
    model, manifest = run.load_auxiliary(path)
    check_compatible(run, manifest, path)
    return model.requires_grad_(False)


def standard_network(run, checkpoint: str | None, epochs: int | None) -> torch.nn.Module:
    """Load the given checkpoint, or train one with the run's config (kept in RUN/hat-standard/)."""
    if checkpoint is not None:
        return load_standard(run, checkpoint)
    epochs = epochs or run.config.epochs
    if run.out is None:  # tests and in-memory runs: train into a temporary directory
        with tempfile.TemporaryDirectory(prefix="advcore-hat-") as tmp:
            try:
                return load_standard(run, train_standard(run, Path(tmp), epochs))
            except Interrupted:
                raise PluginError("hat: training of the standard network was stopped; without a run directory "
                                  "nothing was kept") from None
    run_dir = Path(run.out) / STD_DIR
    if run.world_size > 1 and (_finished_epochs(run_dir) or 0) < epochs:
        raise PluginError(
            f"hat: the standard network in {run_dir} is not trained yet and {run.world_size} processes cannot "
            f"train it together; train it first (advcore train --plugin standard ...) and pass "
            f"--set options.hat.std_checkpoint=PATH"
        )
    if run.is_main():
        try:
            train_standard(run, run_dir, epochs)
        except Interrupted:
            raise PluginError(f"hat: training of the standard network was stopped; its checkpoint is in {run_dir}: "
                              f"run the same command again to continue it") from None
    return load_standard(run, run_dir / "checkpoints" / "last")
