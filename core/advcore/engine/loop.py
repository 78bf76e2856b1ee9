"""Building a run: device, seeds, the plugin composition, data, model and loader; nothing trains."""

from __future__ import annotations

import json
import math
import random
import time
from contextlib import contextmanager
from types import SimpleNamespace
from pathlib import Path
from typing import Any
import numpy as np
import torch
from ..runtime import checkpoint as ckpt
from ..runtime import distributed
from ..attacks import model_mode, pgd_eval, set_mode
from ..kernel.config import RunConfig, validate_options
from ..data.datasets import Augment, Loader, held_out_indices
from ..data.user_data import load_dataset
from ..runtime.ema import STASH_KEY as EMA_KEY, WeightAverage, ema_of, ema_tensors, load_ema, update_ema
from ..errors import CheckpointError, CompositionMismatch, ConfigError, TrainingError
from ..data.mixing import MixedLoader, training_data
from ..models.architectures import avx2_weight_gradient_hazard, check_user_model
from ..kernel.plugins import Hooks, Installed, build_manager, resolve
from ..runtime.resume import record_changes
from ..runtime.runlock import RunLock
from ..kernel.run import Run, Services
from ..runtime.speed import place_dataset, step_models
from ..kernel.state import SampleState
from ..runtime.tensorboard_log import metrics_board, require_tensorboard
from ..kernel.step import Step
from ..progress import POSTFIX_EVERY, progress_bar, show_values

from .signals import StopOnSignal, _interrupted
from .metrics import EpochTotals, _quiet, _read_metrics, _summary
from .model_spec import build_model_from_spec, load_model_tensors, model_spec
from .optim import build_optimizer, build_scheduler, fast_forward, load_scheduler_state, scheduler_state

__all__ = ['resolve_device', 'seed_everything', 'epoch_seed', 'resolve_composition', 'build_run', 'engine_services', 'isolated_rng', 'load_model', 'train_step', 'evaluate', 'evaluate_run', 'epoch_eval_sizes', 'evaluate_epoch', 'selection_score', 'checkpoint_tensors', 'write_checkpoint', 'restore_checkpoint', 'prepare_out', 'train', 'chance_warning', 'InEpochSaver']


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device: invalid value {name!r} (allowed: auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda requested but no CUDA device is available; use --set device=cpu")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The RNG seed of one epoch, so resuming at an epoch boundary replays it exactly."""
    return (seed * 1_000_003 + epoch * 7_919 + 17) % 2**63


def resolve_composition(config: RunConfig, plugins: list[Installed] | None = None
                        ) -> tuple[list[Installed], dict[str, Any]]:
    """The enabled plugins (defaults added) and each one's validated options; no data is touched."""
    plugins = resolve(config.plugins) if plugins is None else plugins
    names = {p.name for p in plugins}
    unknown = sorted(set(config.options) - names)
    if unknown:
        raise ConfigError(
            f"options.{unknown[0]}: plugin '{unknown[0]}' is not enabled; add --plugin {unknown[0]} or drop its options"
        )
    return plugins, {p.name: validate_options(p.name, p.info.options, config.options.get(p.name, {})) for p in plugins}


def build_run(config: RunConfig, out: str | Path | None, *, rank: int = 0, world_size: int = 1,
              plugins: list[Installed] | None = None) -> tuple[Run, Loader]:
    """Resolve plugins, load data, build model and optimizer; nothing is trained yet."""
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    seed_everything(config.seed)
    plugins, options = resolve_composition(config, plugins)
    hooks = Hooks(build_manager(plugins))
    device = resolve_device(config.device)
    train_set, test_set, info = load_dataset(config.data.dataset, data_dir=config.data.data_dir,
                                             download=config.data.download)
    choose = lambda kind, n: hooks.training_subset(config, options, train_set, kind, n)  # noqa: E731 - a plugin's KIND:N
    train_set, indices, extra_indices = training_data(config, train_set, info, choose)  # data.subset / data.extra
    train_set = place_dataset(train_set, device, config.data.on_device)  # once per run, not per batch
    model = build_model_from_spec(model_spec(config, info)).to(device)
    if config.model.factory:  # a user's module: one line now rather than a traceback in the first step
        first = train_set.images[:2].to(device)
        check_user_model(model, first.float() / 255 if first.dtype == torch.uint8 else first.float(), info.num_classes,
                         config.model.factory)
    eps = config.attack.eps if config.attack.eps is not None else info.default_eps
    step_size = config.attack.step_size if config.attack.step_size is not None else eps / 4
    run = Run(config=config, out=Path(out) if out else None, device=device, plugins=plugins, hooks=hooks,
              options=options, info=info, train_set=train_set, test_set=test_set, model=model,
              optimizer=None,  # type: ignore[arg-type]  (built after the model is configured)
              state=SampleState(len(train_set), device), eps=eps, step_size=step_size, norm=config.attack.norm,
              rank=rank, world_size=world_size, services=engine_services())
    hooks.configure_model(run, model)
    model.to(device)
    hazard = avx2_weight_gradient_hazard(model, device)
    if hazard is not None:
        raise ConfigError(f"model: {hazard}")
    if config.init_from:
        manifest, tensors = ckpt.load_checkpoint(config.init_from)
        load_model_tensors(model, tensors, config.init_from)
    run.optimizer = build_optimizer(config, model)
    if config.ema.decay is not None:
        run.stash[EMA_KEY] = WeightAverage(model, config.ema.decay, config.ema.warmup)
    run.views = hooks.data_views(run)
    augment = Augment(info.augment_crop_padding, info.flip, config.data.pad_fill) if config.data.augment else None
    mixed = ({} if extra_indices is None else  # data.extra_fraction of each batch extra
             {"extra_indices": extra_indices, "extra_fraction": config.data.extra_fraction})
    loader = (MixedLoader if mixed else Loader)(
        train_set, batch_size=config.data.batch_size, seed=config.seed, augment=augment, device=device,
        indices=indices, views=run.views, rank=rank, world_size=world_size, **mixed)
    run.augment, run.loader = augment, loader
    run.steps_per_epoch = len(loader)
    run.scheduler = build_scheduler(config, run.optimizer, run.steps_per_epoch)  # stepped once per batch
    step_models(run)  # speed options and DDP around run.model, made once
    return run, loader


def engine_services() -> Services:
    """The engine functions a run lends its plugins (``Run.train_auxiliary``, ``global_sum``, ...)."""
    return Services(train=train, load_model=load_model, model_spec=model_spec,
                    global_sum=distributed.global_sums, isolated_rng=isolated_rng)


@contextmanager
def isolated_rng():
    """Run a block without changing the process's random streams (what it draws is forgotten)."""
    tensors, meta = ckpt.capture_rng()
    try:
        yield
    finally:
        ckpt.restore_rng(tensors, meta)


def load_model(path: str | Path, device: str = "auto", *, ema: bool = False
               ) -> tuple[torch.nn.Module, RunConfig, dict[str, Any]]:
    """Rebuild a checkpoint's model, with the plugins it was trained with configuring it.

    A model whose head was swapped by a plugin (HE) therefore evaluates with that head and
    no plugin flags. ``ema=True`` loads the exponential moving average of the weights.
    """
    manifest, tensors = ckpt.load_checkpoint(path)
    config = RunConfig.model_validate(manifest["config"])
    plugins = resolve([p["name"] for p in manifest["plugins"]])
    options = {p.name: validate_options(p.name, p.info.options, config.options.get(p.name, {})) for p in plugins}
    hooks = Hooks(build_manager(plugins))
    model = build_model_from_spec(manifest["model"])
    dev = resolve_device(device)
    context = SimpleNamespace(config=config, options=options, device=dev, plugins=plugins, hooks=hooks,
                              info=None, stash={}, evaluation=True)
    hooks.configure_model(context, model)
    if ema:
        if not any(k.startswith("ema.") for k in tensors):
            raise CheckpointError(f"checkpoint {path} holds no EMA weights; train with --set ema.decay=0.999 "
                                  f"or evaluate without --ema")
        tensors = {"model." + k[len("ema."):]: v for k, v in tensors.items()
                   if k.startswith("ema.") and not k.startswith("ema._")}
    load_model_tensors(model, tensors, path)
    return model.to(dev).eval(), config, manifest


def _stack_views(batch) -> tuple[torch.Tensor, ...]:
    if not batch.views:  # one view: nothing to concatenate
        return batch.x, batch.y, batch.index, batch.crop, batch.flip, torch.zeros_like(batch.y)
    parts = [batch] + list(batch.views)
    cat = lambda xs: None if xs[0] is None else xs[0] if len(xs) == 1 else torch.cat(xs)  # noqa: E731
    view = torch.cat([torch.full_like(b.y, i) for i, b in enumerate(parts)])
    return (cat([b.x for b in parts]), cat([b.y for b in parts]), cat([b.index for b in parts]),
            cat([b.crop for b in parts]), cat([b.flip for b in parts]), view)


def train_step(run: Run, batch, epoch: int, batch_no: int) -> Step:
    """One batch through selection, generation, targets, update and state updates."""
    x, y, index, crop, flip, view = _stack_views(batch)
    n = y.shape[0]
    models = step_models(run)
    step = Step(run=run, model=models.attack, train_model=None if models.train is models.attack else models.train,
                x=x, y=y, index=index, epoch=epoch, batch=batch_no,
                eps=torch.full((n,), run.eps, device=x.device),
                step_size=torch.full((n,), run.step_size, device=x.device),
                steps=run.config.attack.steps, view=view, num_views=run.views, crop=crop, flip=flip)
    run.hooks.select_samples(run, step)
    for replay in range(run.replays):
        step.replay = replay
        step.examples = {"clean": x}
        step.targets, step.terms = {}, []
        step.clear_logits()
        objective = run.hooks.attack_objective(run, step)
        if objective is not None:
            set_mode(run.model, run.attack_mode(objective.mode) == "train")
            adv = run.hooks.generate_adversarial(run, step, objective)
            step.examples["attack"] = step.examples["adv"] = adv.detach()
            set_mode(run.model, True)  # the mode of everything that follows (selection passes restore theirs)
        run.hooks.derive_examples(run, step)
        run.hooks.adapt_targets(run, step)
        loss = run.hooks.update(run, step)
        step.loss_value = loss.item()  # the step's one host sync: the NaN check and train_loss share it
        if not math.isfinite(step.loss_value):
            terms = ", ".join(f"{t.name}={t.values.mean().item():.4g}" for t in step.terms)
            raise TrainingError(
                f"loss became {step.loss_value} at epoch {epoch} batch {batch_no} ({terms}); lower the learning "
                f"rate or check the plugin options, then resume from the last good checkpoint"
            )
        run.hooks.after_step(run, step)
        if run.world_size > 1:
            distributed.sync_state(run.state, index)  # every rank gets the rows the others wrote
        step.clear_logits()
        run.global_step += 1
        update_ema(run)
    if run.scheduler is not None:  # once per batch: every replay of a batch (Free AT) shares its learning rate
        run.scheduler.step()
    return step


def evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *, eps: float, step_size: float,
             steps: int, restarts: int = 1, batch_size: int = 256, device: torch.device | str = "cpu",
             norm: str = "Linf", progress: str | None = None) -> dict[str, float]:
    """Clean and PGD accuracy of ``model`` (eval mode) on uint8 or float images, in the ``norm`` ball.

    ``progress`` names a progress bar over the batches (shown on an interactive stderr only)."""
    correct = robust = 0
    starts = range(0, labels.shape[0], batch_size)
    with model_mode(model, "eval"):
        for start in starts if progress is None else progress_bar(starts, len(starts), progress):
            x = images[start:start + batch_size].to(device)
            x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
            y = labels[start:start + batch_size].to(device)
            with torch.no_grad():
                correct += (model(x).argmax(1) == y).sum().item()
            adv = pgd_eval(model, x, y, eps=eps, step_size=step_size, steps=steps, restarts=restarts, norm=norm)
            with torch.no_grad():
                robust += (model(adv).argmax(1) == y).sum().item()
    n = max(labels.shape[0], 1)
    return {"clean_acc": correct / n, "robust_acc": robust / n}


def evaluate_run(run: Run, model: torch.nn.Module | None = None, n: int | None = None,
                 progress: str | None = None) -> dict[str, float]:
    """Clean and PGD accuracy on the first ``n`` (default ``eval.n``) held-out test samples
    (``progress``: the name of a progress bar, on the main process only)."""
    c = run.config
    n = min(c.eval.n if n is None else n, c.eval.n, len(run.test_set))
    idx = held_out_indices(len(run.test_set), n, run.config.seed)
    model = run.model if model is None else model
    return evaluate(model, run.test_set.images[idx], run.test_set.labels[idx], eps=run.eps,
                    step_size=run.eps / 4, steps=c.eval.pgd_steps, restarts=c.eval.restarts,
                    batch_size=c.data.eval_batch_size, device=run.device, norm=run.norm,
                    progress=progress if run.is_main() else None)


def epoch_eval_sizes(run: Run) -> tuple[int, int]:
    """(samples of an intermediate epoch's evaluation, samples of the final one).

    A short run on the CPU spent a third of each epoch evaluating 500 samples with PGD-20;
    the other epochs now look at the first ``eval.epoch_n`` of those samples (the same
    attack), and only the last epoch pays for all of ``eval.n``. The smaller set is a subset
    of the larger (``held_out_indices`` takes a prefix of one permutation).
    """
    full = min(run.config.eval.n, len(run.test_set))
    small = run.config.eval.epoch_n
    return (full if small is None else min(small, full)), full


def evaluate_epoch(run: Run, final: bool) -> dict[str, Any]:
    """The evaluation after one epoch: ``eval_n`` samples, their accuracies, and (at the end,
    when the sets differ) ``select_robust_acc`` on the per-epoch subset, so the best
    checkpoint is chosen on the same samples in every epoch."""
    small, full = epoch_eval_sizes(run)
    models = [("", run.model)] + ([("ema_", ema_of(run).module)] if ema_of(run) is not None else [])
    out: dict[str, Any] = {"eval_n": full if final else small}
    name = f"eval epoch {run.epoch + 1}"
    for prefix, model in models:
        bar = name + (" (ema)" if prefix else "")
        out.update({f"{prefix}{k}": v for k, v in evaluate_run(run, model, full if final else small, bar).items()})
    if final and small < full:
        out["select_robust_acc"] = evaluate_run(run, run.model, small, name + " (selection)")["robust_acc"]
    return out


def selection_score(metrics: dict[str, Any]) -> float:
    """What picks the best checkpoint: robust accuracy on the per-epoch evaluation set."""
    return metrics.get("select_robust_acc", metrics.get("robust_acc", -1.0))


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
                    write_checkpoint(run, "last", epoch=epoch, batch=batch_no + 1, partial=dict(totals.__dict__))
                if world_size > 1 and distributed.any_rank(stop.signal is not None, run.device) and stop.signal is None:
                    stop.signal = "a signal to another rank"  # every rank stops after the same step
                if stop.signal is not None:
                    totals.seconds = time.perf_counter() - began
                    write_checkpoint(run, "last", epoch=epoch, batch=batch_no + 1, partial=totals.__dict__)
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
