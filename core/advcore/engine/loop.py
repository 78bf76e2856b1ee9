"""The training loop: epochs, the per-epoch evaluation and checkpoints, signals, and the warning for a degenerate run."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any
import torch
from ..runtime import checkpoint as ckpt
from ..runtime import distributed
from ..kernel.config import RunConfig
from ..errors import CheckpointError, ConfigError, TrainingError
from ..runtime.resume import record_changes
from ..runtime.runlock import RunLock
from ..kernel.run import Run
from ..runtime.tensorboard_log import metrics_board, require_tensorboard
from ..progress import POSTFIX_EVERY, progress_bar, show_values
from .signals import StopOnSignal, _interrupted
from .metrics import EpochTotals, _quiet, _read_metrics, _summary
from .build import build_run, epoch_seed, lend_train
from .checkpoints import InEpochSaver, _restore_latest, write_checkpoint
from .epoch_eval import evaluate_epoch, selection_score
from .step import train_step

__all__ = ['prepare_out', 'train', 'chance_warning']


def prepare_out(config: RunConfig, out: Path | None, resume: bool) -> None:
    """A new run's directory and config.json (a resume writes nothing until its checkpoint loads)."""
    if out is None or resume:
        return
    if (out / "checkpoints" / "last.json").exists():
        raise ConfigError(f"run directory {out} already holds a run; pass --resume to continue it or choose another --out")
    try:
        (out / "config.json").write_text(json.dumps(config.model_dump(mode="json"), indent=1))
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write there ({exc.strerror or exc}); choose another --out") from None


def train(config: RunConfig, out: str | Path | None = None, *, resume: bool = False, rank: int = 0,
          world_size: int = 1, log=print, stop_after: int | None = None,
          fallback: bool = False, tensorboard: bool = False, changes: dict | None = None) -> list[dict[str, Any]]:
    """Train, evaluating every epoch; returns the metrics records (also in metrics.jsonl).

    ``stop_after=k`` ends the process's work after epoch k as an interruption would (the
    checkpoint is written, run-end hooks are not called), e.g. to test resuming.
    ``tensorboard=True`` also writes each epoch's metrics to ``out/tensorboard``.
    """
    out = Path(out) if out else None
    launch = distributed.from_env() if world_size == 1 else distributed.Launch(rank, world_size, rank)
    if launch.world_size > 1:  # torchrun (or a caller's process group): DDP, one device per rank
        config = config.model_copy(update={"device": distributed.start(launch, config.device)})
        rank, world_size = launch.rank, launch.world_size
    if rank != 0:
        log = _quiet  # metrics and messages come from rank 0
    if tensorboard:
        require_tensorboard(out)  # fail before any work when the package is missing
    if resume and (out is None or not any((out / "checkpoints" / f"{t}.json").exists() for t in ckpt.FALLBACK_ORDER)):
        raise CheckpointError(f"nothing to resume in {out}: no checkpoints/last.json; start without --resume")
    with RunLock(out if rank == 0 else None, create=not resume):
        return _train(config, out, resume=resume, rank=rank, world_size=world_size, log=log, stop_after=stop_after,
                      fallback=fallback, tensorboard=tensorboard, changes=changes or {})


lend_train(train)  # runs built by engine/build.py can train their auxiliary runs (HAT's standard network)


def _train(config: RunConfig, out: Path | None, *, resume: bool, rank: int, world_size: int, log, stop_after,
           fallback: bool, tensorboard: bool, changes: dict) -> list[dict[str, Any]]:
    run, loader = build_run(config, out, rank=rank, world_size=world_size)
    if rank == 0:
        prepare_out(config, out, resume)
    start_epoch, start_batch, partial = 0, 0, {}
    best = -1.0
    history: list[dict[str, Any]] = []
    if resume:
        start_epoch, start_batch, partial = _restore_latest(run, out, fallback, log)
        if run.is_main():  # accepted: only now does the run directory change
            record_changes(out, config, changes, start_epoch, start_batch)
        history = _read_metrics(out, start_epoch) if run.is_main() else []  # one process rewrites the file
        best = max((selection_score(m) for m in history), default=-1.0)
    log(f"advcore: {config.data.dataset}, {len(loader)} batches/epoch, eps {run.eps:.4g}"
        + ("" if run.norm == "Linf" else f" ({run.norm})") + ", "
        f"plugins {' + '.join(run.plugin_names)}" + (f", resuming at epoch {start_epoch + 1}" if resume else ""))
    restored_rng = ckpt.capture_rng() if resume else None
    run.hooks.on_run_start(run)
    if restored_rng is not None:  # run-start work (e.g. HAT's helper network) must not shift the saved streams
        ckpt.restore_rng(*restored_rng)
    saver = InEpochSaver(config.checkpoint.every_steps, config.checkpoint.every_seconds)
    with StopOnSignal() as stop, metrics_board(out, start_epoch, tensorboard and run.is_main()) as board:
        for epoch in range(start_epoch, config.epochs):
            run.epoch = epoch
            if start_batch == 0:
                torch.manual_seed(epoch_seed(config.seed, epoch) + rank)  # ranks draw independent noise
            run.hooks.on_epoch_start(run, epoch)
            totals = EpochTotals(**partial) if start_batch else EpochTotals()
            began = time.perf_counter() - totals.seconds
            batches = loader.epoch(epoch, start_batch=start_batch)
            lr_used = run.optimizer.param_groups[0]["lr"]
            bar = progress_bar(batches, len(loader) - start_batch, f"epoch {epoch + 1}", enabled=run.is_main())
            for batch_no, batch in enumerate(bar, start_batch):
                lr_used = run.optimizer.param_groups[0]["lr"]  # the scheduler moves it on after the step
                try:
                    step = train_step(run, batch, epoch, batch_no)
                except TrainingError as exc:
                    last = out / "checkpoints" / "last.json" if out is not None else None
                    good = str(last) if last is not None and last.exists() else "none written yet"
                    raise TrainingError(f"{exc}; last good checkpoint: {good}") from None
                totals.add(step)
                if (batch_no + 1) % POSTFIX_EVERY == 0 or batch_no + 1 == len(loader):
                    show_values(bar, loss=f"{totals.running_loss():.4f}")
                if stop.signal is None and batch_no + 1 < len(loader) and saver.due(run):  # checkpoint.every_*
                    totals.seconds = time.perf_counter() - began
                    write_checkpoint(run, "last", epoch=epoch, batch=batch_no + 1, partial=totals.state())
                if world_size > 1 and distributed.any_rank(stop.signal is not None, run.device) and stop.signal is None:
                    stop.signal = "a signal to another rank"  # every rank stops after the same step
                if stop.signal is not None:
                    totals.seconds = time.perf_counter() - began
                    write_checkpoint(run, "last", epoch=epoch, batch=batch_no + 1, partial=totals.state())
                    distributed.wait_for_all()
                    raise _interrupted(stop.signal, epoch, batch_no, out)
            start_batch = 0
            distributed.average_buffers(run.model)  # BatchNorm running statistics: the ranks' average
            metrics: dict[str, Any] = {"epoch": epoch + 1, **totals.metrics()}
            if (epoch + 1) % config.eval.every == 0 or epoch + 1 == config.epochs:
                eval_began = time.perf_counter()
                metrics.update(evaluate_epoch(run, final=epoch + 1 == config.epochs))
                metrics["eval_seconds"] = round(time.perf_counter() - eval_began, 3)
            metrics["lr"] = lr_used  # the learning rate of the epoch's last batch
            metrics["seconds"] = round(time.perf_counter() - began, 3)
            run.hooks.on_epoch_end(run, epoch, metrics)
            if (warning := chance_warning(run, metrics)) is not None:
                log(warning)
            history.append(metrics)
            if run.is_main() and out is not None:
                with open(out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(metrics) + "\n")
                board.write(metrics)
                if "robust_acc" in metrics and selection_score(metrics) > best:
                    best = selection_score(metrics)
                    write_checkpoint(run, "best", epoch=epoch + 1, metrics=metrics)
                write_checkpoint(run, "last", epoch=epoch + 1, metrics=metrics)
            log(_summary(metrics, config.epochs))
            if world_size > 1 and distributed.any_rank(stop.signal is not None, run.device) and stop.signal is None:
                stop.signal = "a signal to another rank"
            if stop.signal is not None and epoch + 1 < config.epochs:
                distributed.wait_for_all()
                raise _interrupted(stop.signal, epoch + 1, -1, out)
            if stop_after is not None and epoch + 1 >= stop_after and epoch + 1 < config.epochs:
                distributed.wait_for_all()
                return history
    run.hooks.on_run_end(run, history[-1] if history else {})
    distributed.wait_for_all()  # rank 0 may still be writing; every rank exits after it
    return history


def chance_warning(run: Run, metrics: dict[str, Any]) -> str | None:
    """One line when an epoch says the weights or the targets degenerated.

    Three signs, each measured on the twin runs of docs/results.md: the train loss sat at
    ln(K) (a constant prediction); it is 0 while the held-out accuracy is near chance (a
    weighting that kept only the samples already fitted: ATTA + reweight, 19.8% on 10
    classes); or the clean accuracy is at chance after the first epoch whatever the loss (HAT
    diverging at a peak learning rate too high for a small network: loss 3.4, 9%). Plugins
    that know a likely cause say so through ``PluginInfo.chance_hint``.
    """
    k, loss = run.info.num_classes, metrics.get("train_loss")
    if loss is None or k < 2:
        return None
    clean = metrics.get("clean_acc")
    near_chance_acc = clean is not None and clean <= 2.5 / k  # a run passing through ln K while learning is fine
    at_ln_k = abs(loss - math.log(k)) <= 0.01 * math.log(k) and (clean is None or near_chance_acc)
    degenerate = loss < 1e-4 and near_chance_acc
    chance_acc = clean is not None and clean <= 1.5 / k and metrics.get("epoch", 1) >= 2
    if at_ln_k:
        what = f"sat at ln({k}) = {math.log(k):.4f}, chance"
    elif degenerate:
        what = f"is 0 with near-chance accuracy ({clean:.1%})"
    elif chance_acc:
        what = f"left clean accuracy at chance ({clean:.1%}) after {metrics['epoch']} epochs"
    else:
        return None
    hints = "; ".join(f"{p.name}: {p.info.chance_hint}" for p in run.plugins if p.info.chance_hint)
    return (f"advcore: warning: epoch {metrics['epoch']} train loss {loss:.4f} {what}: the model or its targets "
            f"degenerated" + (f"; likely cause: {hints}" if hints else "; check the learning rate and the plugins' options"))
