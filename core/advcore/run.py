"""The per-run context handed to every hook: config, model, optimizer, data, state, stash."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pydantic import BaseModel

from .config import RunConfig
from .plugins import Hooks, Installed
from .state import SampleState

if TYPE_CHECKING:  # the kernel names the data types but does not import the data layer
    from .data import Dataset, DatasetInfo

__all__ = ["Run"]


@dataclass(eq=False)
class Run:
    """Everything a plugin may read during a run.

    ``options[name]`` is plugin ``name``'s validated options; ``stash[name]`` is where a
    plugin keeps runtime objects (auxiliary networks, proxies) between hooks; ``state``
    holds per-sample tensors keyed by dataset index. ``norm`` ("Linf" or "L2") is the threat
    model: pass it to ``advcore.attacks.pgd``/``project``/``random_start``.
    """

    config: RunConfig
    out: Path | None
    device: torch.device
    plugins: list[Installed]
    hooks: Hooks
    options: dict[str, BaseModel | None]
    info: DatasetInfo
    train_set: Dataset
    test_set: Dataset
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    state: SampleState
    eps: float
    step_size: float
    norm: str = "Linf"  # attack.norm: the ball every adversary and the per-epoch evaluation use
    steps_per_epoch: int = 1
    stash: dict[str, Any] = field(default_factory=dict)
    epoch: int = 0
    global_step: int = 0
    replays: int = 1
    views: int = 1
    rank: int = 0
    world_size: int = 1

    @property
    def plugin_names(self) -> list[str]:
        return [p.name for p in self.plugins]

    def attack_mode(self, published: str) -> str:
        """The model mode for example generation: the config's, or the method's published one."""
        mode = self.config.attack.model_mode
        return published if mode == "auto" else mode

    def is_main(self) -> bool:
        """True on the process that writes files (rank 0)."""
        return self.rank == 0
