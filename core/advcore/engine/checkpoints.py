"""Writing and restoring a run's checkpoints (model, optimizer, schedule, per-sample state, RNG streams), in-epoch saves, and the fallback to the previous checkpoint when the last is corrupt."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
import torch
from ..runtime import checkpoint as ckpt
from ..runtime.ema import ema_tensors, load_ema
from ..errors import CheckpointError, CompositionMismatch
from ..kernel.run import Run
from .model_spec import load_model_tensors, model_spec
from .optim import build_scheduler, fast_forward, load_scheduler_state, scheduler_state

__all__ = ['checkpoint_tensors', 'write_checkpoint', 'restore_checkpoint', 'InEpochSaver']


def checkpoint_tensors(run: Run) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {f"model.{k}": v for k, v in run.model.state_dict().items()}
    opt_tensors, opt_meta = ckpt.flatten_optimizer(run.optimizer.state_dict())
    tensors.update(opt_tensors)
    tensors.update({f"state.{k}": v for k, v in run.state.state_dict().items()})
    rng_tensors, rng_meta = ckpt.capture_rng()
    tensors.update(rng_tensors)
    tensors.update(ema_tensors(run))
    plugin_json = {}
    for name, part in run.hooks.state_dict(run).items():
        for key, value in (part.get("tensors") or {}).items():
            tensors[f"plugin.{name}.{key}"] = value
        plugin_json[name] = part.get("json") or {}
    return tensors, {"optimizer": opt_meta, "rng": rng_meta, "plugin_state": plugin_json}


def write_checkpoint(run: Run, tag: str, *, epoch: int, batch: int = 0, metrics: dict | None = None,
                     partial: dict | None = None) -> Path | None:
    """Save the run so it can resume at (epoch, batch); only rank 0 writes.

    ``epoch``/``batch`` name the next batch to run; ``partial`` carries the running totals
    of an interrupted epoch so its metrics come out as if it had not been interrupted.
    """
    if run.out is None or not run.is_main():
        return None
    tensors, meta = checkpoint_tensors(run)
    manifest = {
        "epoch": epoch, "batch": batch, "global_step": run.global_step,
        "config": run.config.model_dump(mode="json"),
        "plugins": [{"name": p.name, "package": p.package, "version": p.version} for p in run.plugins],
        "model": dict(model_spec(run.config, run.info), head=getattr(run.model, "advcore_head", None)),
        "metrics": metrics or {}, "partial": partial or {}, **meta,
        "scheduler": None if run.scheduler is None else scheduler_state(run.scheduler),
        "world_size": run.world_size, "steps_per_epoch": run.steps_per_epoch,  # to resume with another N
    }
    return ckpt.save_checkpoint(run.out / "checkpoints" / tag, tensors, manifest, keep_previous=tag == "last")


def restore_checkpoint(run: Run, path: str | Path) -> tuple[int, int, dict]:
    """Load a checkpoint into the run; returns (epoch, batch, partial epoch totals) to continue from."""
    manifest, tensors = ckpt.load_checkpoint(path)
    needed = [p["name"] for p in manifest.get("plugins", [])]
    if sorted(needed) != sorted(run.plugin_names):
        raise CompositionMismatch(
            f"checkpoint {path} was trained with plugins {', '.join(needed)}, this run uses "
            f"{', '.join(run.plugin_names)}; resume with --plugin {' --plugin '.join(needed)}"
        )
    load_model_tensors(run.model, tensors, path)
    run.optimizer.load_state_dict(ckpt.unflatten_optimizer(tensors, manifest["optimizer"]))
    run.state.load_state_dict({k[len("state."):]: v for k, v in tensors.items() if k.startswith("state.")})
    load_ema(run, tensors)
    plugin_state: dict[str, dict] = {}
    for key, value in tensors.items():
        if key.startswith("plugin."):
            _, name, sub = key.split(".", 2)
            plugin_state.setdefault(name, {"tensors": {}, "json": {}})["tensors"][sub] = value
    for name, data in manifest.get("plugin_state", {}).items():
        plugin_state.setdefault(name, {"tensors": {}, "json": {}})["json"] = data
    run.hooks.load_state_dict(run, plugin_state)
    run.global_step = manifest["global_step"]
    ckpt.restore_rng(tensors, manifest["rng"])
    batch = _rescale_progress(run, manifest, path)
    _restore_schedule(run, manifest, manifest["epoch"] * run.steps_per_epoch + batch)
    if run.world_size > 1:  # rank 0's generator was saved; give each rank its own stream again
        torch.manual_seed(int(torch.randint(2**62, ())) + run.rank)
    return manifest["epoch"], batch, manifest.get("partial", {})


def _restore_schedule(run: Run, manifest: dict, batches_done: int) -> None:
    """Load the saved scheduler state, or rebuild the schedule and step it to ``batches_done``.

    The saved state is the schedule of the saved config over its batches per epoch; when the
    checkpoint has none (written before schedulers were saved), or the resume changed the
    schedule (``--epochs``, optim settings) or the batches per epoch (another global batch),
    the run's own schedule is rebuilt and fast-forwarded: the learning rate is then that of the
    new schedule at this point of the run.
    """
    saved = manifest.get("scheduler")
    old = manifest.get("config", {})
    same = (saved is not None and manifest.get("steps_per_epoch") == run.steps_per_epoch
            and old.get("epochs") == run.config.epochs and old.get("optim") == run.config.optim.model_dump(mode="json"))
    if same:
        load_scheduler_state(run.scheduler, saved)
    else:
        run.scheduler = build_scheduler(run.config, run.optimizer, run.steps_per_epoch)
        fast_forward(run.scheduler, batches_done)


def _rescale_progress(run: Run, manifest: dict, path) -> int:
    """The batch to continue from (and ``run.global_step``) when the global batch changed.

    Per-sample state is global and the epoch's sample order does not depend on the number
    of processes, so only the batch counters need converting; a mid-epoch position must
    fall on a batch boundary of the new global batch.
    """
    batch, saved_steps = manifest["batch"], manifest.get("steps_per_epoch")
    if not saved_steps or saved_steps == run.steps_per_epoch:
        return batch
    run.global_step = round(manifest["global_step"] * run.steps_per_epoch / saved_steps)
    if batch == 0:
        return 0
    saved = manifest.get("world_size", 1) * manifest["config"]["data"]["batch_size"]
    now = run.world_size * run.config.data.batch_size
    done = batch * saved
    if done % now:
        raise CheckpointError(
            f"checkpoint {path} stopped mid-epoch after {done} samples (global batch {saved}), which is not a "
            f"multiple of this run's global batch {now} (batch_size x processes); resume with a global batch "
            f"that divides {done}, e.g. the same number of processes"
        )
    return done // now


class InEpochSaver:
    """When to write an in-epoch checkpoint: every N global steps and/or every T seconds."""

    def __init__(self, every_steps: int | None, every_seconds: float | None) -> None:
        self.every_steps, self.every_seconds = every_steps, every_seconds
        self.last = time.monotonic()

    def due(self, run: Run) -> bool:
        if run.out is None:
            return False
        due = bool(self.every_steps and run.global_step % self.every_steps == 0)
        due = due or bool(self.every_seconds and time.monotonic() - self.last >= self.every_seconds)
        if due:
            self.last = time.monotonic()
        return due


def _restore_latest(run: Run, out: Path, fallback: bool, log) -> tuple[int, int, dict]:
    """Resume from ``last``; with ``fallback``, from the newest intact of previous, best."""
    folder = out / "checkpoints"
    last = folder / "last.json"
    others = [folder / f"{t}.json" for t in ckpt.FALLBACK_ORDER[1:] if (folder / f"{t}.json").exists()]
    try:
        if not last.exists():
            raise CheckpointError(f"checkpoint {last} is missing")
        return restore_checkpoint(run, last)
    except CompositionMismatch:  # another composition: an older checkpoint of this run cannot help
        raise
    except CheckpointError as exc:
        if not others:
            raise
        if not fallback:
            raise CheckpointError(f"{exc}; or pass --fallback to resume from {others[0]}") from None
        problem = exc
    for path in others:
        log(f"advcore: {problem}; falling back to {path}")
        try:
            return restore_checkpoint(run, path)
        except CompositionMismatch:
            raise
        except CheckpointError as exc:
            problem = exc
    raise CheckpointError(f"no intact checkpoint left in {folder}: {problem}; start a new run") from None
