"""The per-run context handed to every hook: config, model, optimizer, data, state, stash."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from pydantic import BaseModel

from .config import RunConfig
from .plugins import Hooks, Installed
from .state import SampleState

if TYPE_CHECKING:  # the kernel names the data types but does not import the data layer
    from ..data.datasets import Dataset, DatasetInfo

__all__ = ["Run", "Services"]


@dataclass(frozen=True)
class Services:
    """What the training engine lends a run, so the kernel names no engine module.

    Filled by the engine when it builds a run; plugins reach them through ``Run`` methods.
    """

    train: Callable[..., Any]
    load_model: Callable[..., Any]
    model_spec: Callable[..., dict]
    global_sum: Callable[[torch.Tensor], torch.Tensor]
    isolated_rng: Callable[[], Any]


@dataclass(eq=False)
class Run:
    """Everything a plugin may read during a run.

    Naming rule (checked): a plugin keeps its runtime objects in ``stash[its name]`` only,
    and every per-sample state tensor, step record, epoch metric and checkpoint entry it adds
    is named ``"<plugin name>.<what>"``; stash entries whose key starts with ``advcore.`` are
    the core's and not part of the API.
    """

    config: RunConfig
    """The validated configuration of the run (read-only for plugins)."""
    out: Path | None
    """The run directory, or None for in-memory runs (tests, the Python API without ``out``)."""
    device: torch.device
    """Where the model and batches live."""
    plugins: list[Installed]
    """The enabled plugins, in canonical order (``PluginInfo.order``, then name)."""
    hooks: Hooks
    """The typed facade that calls every plugin's hooks (use it to call other hooks, e.g. ``loss_terms``)."""
    options: dict[str, BaseModel | None]
    """Each enabled plugin's validated options, by plugin name."""
    info: DatasetInfo
    """The dataset's description: name, classes, channels, image size, default budget."""
    train_set: Dataset
    """The training images (uint8 [N, C, H, W]) and labels; state rows are indices into it."""
    test_set: Dataset
    """The held-out images the per-epoch evaluation uses."""
    model: torch.nn.Module
    """The network being trained (its ``features(x)`` and ``head`` where it has them)."""
    optimizer: torch.optim.Optimizer
    """The optimizer over ``model``'s parameters."""
    state: SampleState
    """Per-sample tensors [N, ...] keyed by dataset index; checkpointed and restored on resume."""
    eps: float
    """The run's attack budget (``attack.eps`` or the dataset's default)."""
    step_size: float
    """The attack's step size (``attack.step_size`` or eps / 4)."""
    norm: str = "Linf"
    """The threat model ("Linf" or "L2"): pass it to ``advcore.attacks.pgd``/``project``/``random_start``."""
    steps_per_epoch: int = 1
    """Batches per epoch on this process."""
    scheduler: Any = None
    """The learning-rate schedule, a ``torch.optim.lr_scheduler`` object the engine steps once per batch
    (after every replay of it) and checkpoints; the current rate is ``optimizer.param_groups[0]["lr"]``."""
    stash: dict[str, Any] = field(default_factory=dict)
    """Runtime objects between hooks: ``stash[plugin name]`` (auxiliary networks, caches, proxies)."""
    epoch: int = 0
    """The current epoch, 0-based."""
    global_step: int = 0
    """Parameter updates so far, over the whole run (resumes continue it)."""
    replays: int = 1
    """Times each batch is replayed (Free AT sets it in ``advcore_on_run_start``)."""
    views: int = 1
    """Augmented views per sample (the largest answer of ``advcore_data_views``)."""
    rank: int = 0
    """This process's rank under ``torchrun`` (0 alone)."""
    world_size: int = 1
    """Number of processes training together."""
    augment: Any = None
    """The training augmentation (random crop with ``padding``, ``flip``), or None: caches kept in the
    padded frame map rows with ``step.crop``/``step.flip`` through it."""
    loader: Any = None
    """The training loader; ``loader.indices`` are the dataset indices this run trains on."""
    services: Services | None = field(default=None, repr=False)
    """Set by the engine; use the methods below instead."""

    @property
    def plugin_names(self) -> list[str]:
        """The enabled plugins' names, in canonical order."""
        return [p.name for p in self.plugins]

    def _service(self) -> Services:
        if self.services is None:
            raise RuntimeError("this Run was not built by the advcore engine; use advcore.testing.tiny_run")
        return self.services

    @property
    def weight_average(self) -> torch.nn.Module | None:
        """The EMA of the weights (``ema.decay``) as a module in eval mode, or None without EMA.

        RAAT# reads its boundary indicators from it; it is checkpointed and restored by the core.
        """
        average = self.stash.get("advcore.ema")
        return None if average is None else average.module

    def global_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of ``tensor`` over every process (the tensor itself with one process)."""
        return tensor if self.world_size == 1 else self._service().global_sum(tensor)

    def model_spec(self) -> dict:
        """How this run's architecture is rebuilt: arch, num_classes, in_channels, image_size, kwargs."""
        return self._service().model_spec(self.config, self.info)

    def train_auxiliary(self, config: RunConfig, out: Path, *, resume: bool = False, log=print) -> Path:
        """Train another network (e.g. HAT's standard one) into ``out``; returns its last checkpoint.

        The run's own random streams are left exactly as they were, so the main run's numbers do
        not depend on whether the auxiliary network was trained now or loaded. Raises
        ``Interrupted`` when a signal stops it (its checkpoint stays in ``out``).
        """
        with self._service().isolated_rng():
            self._service().train(config, out, resume=resume, log=log)
        return Path(out) / "checkpoints" / "last"

    def load_auxiliary(self, path) -> tuple[torch.nn.Module, dict]:
        """A network from an advcore checkpoint, on this run's device in eval mode, with its manifest."""
        model, _, manifest = self._service().load_model(path, device=str(self.device))
        return model.eval(), manifest

    def attack_mode(self, published: str) -> str:
        """The model mode for example generation: the config's, or the method's published one."""
        mode = self.config.attack.model_mode
        return published if mode == "auto" else mode

    def is_main(self) -> bool:
        """True on the process that writes files (rank 0)."""
        return self.rank == 0
