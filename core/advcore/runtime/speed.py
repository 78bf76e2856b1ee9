"""How a step runs fast: channels-last, bf16 autocast, torch.compile, DDP, data on the device, host memory.

None of these change what a step computes (docs/performance.md lists each one's tolerance).
``run.model`` stays the plain module that checkpoints, evaluation and plugins see; the
step runs two views of it that share its parameters: ``attack`` (adversaries, selection
passes: ``step.model``) and ``train`` (``step.logits``, wrapped in DistributedDataParallel
when several processes train together).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..data.datasets import Dataset

__all__ = ["Forward", "Models", "build_models", "cpu_default_on", "step_models", "wants_device", "place_dataset", "keep_host_memory", "ON_DEVICE_LIMIT"]

ON_DEVICE_LIMIT = 2 << 30
"""data.on_device=auto moves a training set of at most this many bytes to a CUDA device."""


class Forward(nn.Module):
    """The model's forward with inputs in channels-last format and/or under bf16 autocast.

    Logits come back as float32, so every loss and attack step is computed in full
    precision; only the network's own layers run in bf16. Attributes other than the
    forward (``features``, ``head``) are the wrapped model's.
    """

    def __init__(self, model: nn.Module, *, channels_last: bool, autocast: str):
        super().__init__()
        self.inner = model
        self.channels_last = channels_last
        self.autocast = autocast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.autocast == "bf16":
            with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
                return self.inner(x).float()
        return self.inner(x)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules") or {}
            if "inner" not in modules:  # half-built (copy, unpickling): nothing to delegate to
                raise
            return getattr(modules["inner"], name)


@dataclass
class Models:
    """The modules a step runs: ``attack`` for input-gradient passes, ``train`` for training forwards."""

    attack: nn.Module
    train: nn.Module
    base: nn.Module  # the run.model they wrap


STASH_KEY = "advcore.models"


def step_models(run) -> Models:
    """The run's ``Models``, rebuilt when ``run.model`` was replaced since they were made."""
    models = run.stash.get(STASH_KEY)
    if models is None or models.base is not run.model:
        models = run.stash[STASH_KEY] = build_models(run)
    return models


def cpu_default_on(setting: bool | str, device: torch.device) -> bool:
    """A speed switch (``speed.channels_last``, ``speed.keep_host_memory``):
    true/false as given; auto = on the CPU only, the one device where benchmarks/overhead.py
    measured them winning (docs/performance.md). CUDA stays off until benchmarks/gpu.py has
    measured them there."""
    return setting is True or (setting == "auto" and torch.device(device).type == "cpu")


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_kept: list[bool] = []  # once per process: the allocator's settings are process-wide


def keep_host_memory(setting: bool | str, device: torch.device) -> bool:
    """``speed.keep_host_memory``: stop glibc returning freed memory to the OS; True when it took effect.

    A CPU step allocates and frees its activations every forward; glibc's defaults give large
    blocks back to the kernel (mmap, heap trimming) and the next step page-faults them in again,
    zeroed: measured ~15% of a small-cnn PGD-AT step on a 2-core CPU. Setting the mmap threshold
    to 1 GiB and never trimming keeps that memory in the process (RSS stays at its peak, as with
    a caching allocator). auto = only when training on the CPU; no effect off glibc.
    """
    if not cpu_default_on(setting, device):
        return False
    if not _kept:
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):  # not glibc (macOS, musl): its allocator keeps its own policy
            _kept.append(False)
        else:
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            _kept.append(bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30) and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)))
    return _kept[0]


def build_models(run) -> Models:
    """Apply ``run.config.speed`` (and DDP when ``run.world_size > 1``) around ``run.model``.

    With every option off and one process both are ``run.model`` itself. A one-process
    group that the caller set up (benchmarks/nccl_resume.py under ``torchrun
    --nproc_per_node 1``) also gets DDP, so that backend's gradient path is exercised.
    """
    speed = run.config.speed
    model = run.model
    channels_last = cpu_default_on(speed.channels_last, run.device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    attack: nn.Module = model
    if channels_last or speed.autocast != "off":
        attack = Forward(model, channels_last=channels_last, autocast=speed.autocast)
    if speed.compile:
        attack = torch.compile(attack, backend=speed.compile_backend)
    train = attack
    if run.world_size > 1 or _one_process_group():
        from .distributed import wrap_ddp

        train = wrap_ddp(attack, run.device)
    return Models(attack=attack, train=train, base=model)


def _one_process_group() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() == 1


def wants_device(dataset: Dataset, device: torch.device, on_device: bool | str) -> bool:
    """``data.on_device``: true, false, or auto = on a CUDA device when the uint8 images are small."""
    if on_device != "auto":
        return bool(on_device)
    size = dataset.images.numel() * dataset.images.element_size()
    return device.type == "cuda" and size <= ON_DEVICE_LIMIT


def place_dataset(dataset: Dataset, device: torch.device, on_device: bool | str) -> Dataset:
    """The training set moved to ``device`` once, when ``wants_device`` says so.

    The loader then gathers, converts and augments every batch on the device; nothing is
    copied per batch.
    """
    if not wants_device(dataset, device, on_device) or dataset.images.device == device:
        return dataset
    return Dataset(dataset.images.to(device), dataset.labels.to(device), dataset.num_classes, dataset.name)
