"""Building a run: device, seeds, the plugin composition, data, model, optimizer and loader; nothing trains."""

from __future__ import annotations

import random
from contextlib import contextmanager
from types import SimpleNamespace
from pathlib import Path
from typing import Any
import numpy as np
import torch
from ..runtime import checkpoint as ckpt
from ..runtime import distributed
from ..kernel.config import RunConfig, validate_options
from ..data.datasets import Augment, Loader
from ..data.user_data import load_dataset
from ..runtime.ema import STASH_KEY as EMA_KEY, WeightAverage
from ..errors import CheckpointError, ConfigError
from ..data.mixing import MixedLoader, training_data
from ..models.architectures import avx2_weight_gradient_hazard, check_user_model
from ..kernel.plugins import Hooks, Installed, build_manager, resolve
from ..kernel.run import Run, Services
from ..runtime.speed import keep_host_memory, place_dataset, step_models
from ..kernel.state import SampleState
from .model_spec import build_model_from_spec, load_model_tensors, model_spec
from .optim import build_optimizer, build_scheduler

__all__ = ['resolve_device', 'seed_everything', 'epoch_seed', 'resolve_composition', 'build_run', 'engine_services', 'isolated_rng', 'load_model']


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
    keep_host_memory(config.speed.keep_host_memory, device)  # before the data and the model are allocated
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


_LOOP: dict[str, Any] = {}  # the loop's train(), which builds its runs here: lent by engine/loop.py


def lend_train(train) -> None:
    """Called once by engine/loop.py, so that runs can train auxiliary runs without this module
    importing the loop that imports it."""
    _LOOP["train"] = train


def engine_services() -> Services:
    """The engine functions a run lends its plugins (``Run.train_auxiliary``, ``global_sum``, ...)."""
    return Services(train=_LOOP["train"], load_model=load_model, model_spec=model_spec,
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
