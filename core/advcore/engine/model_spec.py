"""The model a run builds, as a JSON-able spec saved in checkpoints, and loading its weights."""

from __future__ import annotations

from typing import Any
import torch
from ..kernel.config import RunConfig
from ..errors import CheckpointError, ConfigError
from ..models.architectures import build_model, build_user_model


__all__ = ['model_spec', 'info_stats', 'build_model_from_spec', 'load_model_tensors']


def model_spec(config: RunConfig, info) -> dict[str, Any]:
    """What is needed to rebuild the architecture from a manifest (a user model: its factory and kwargs)."""
    if config.model.factory:
        return {"factory": config.model.factory, "kwargs": dict(config.model.kwargs), "num_classes": info.num_classes,
                "in_channels": info.channels, "image_size": info.size}
    arch = config.model.arch
    if arch == "auto":
        arch = "small-cnn" if info.size <= 28 else "preact-resnet18"
    kwargs: dict[str, Any] = {}
    if config.model.width is not None:
        kwargs["width"] = config.model.width
    if config.model.normalize:
        kwargs["mean"], kwargs["std"] = info_stats(info)
    return {"arch": arch, "num_classes": info.num_classes, "in_channels": info.channels,
            "image_size": info.size, "kwargs": kwargs}


def info_stats(info) -> tuple[list[float], list[float]]:
    stats = {"cifar10": ([0.4914, 0.4822, 0.4465], [0.2471, 0.2435, 0.2616]),
             "cifar100": ([0.5071, 0.4865, 0.4409], [0.2673, 0.2564, 0.2762])}
    return stats.get(info.name, ([0.5] * info.channels, [0.5] * info.channels))


def build_model_from_spec(spec: dict[str, Any]) -> torch.nn.Module:
    if spec.get("factory"):
        return build_user_model(spec["factory"], spec.get("kwargs"))
    try:
        return build_model(spec["arch"], num_classes=spec["num_classes"], in_channels=spec["in_channels"],
                           image_size=spec["image_size"], **spec.get("kwargs", {}))
    except ValueError as exc:
        raise ConfigError(f"model.arch: {exc}") from None


def load_model_tensors(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: Any) -> None:
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "shape mismatch"
        raise CheckpointError(f"checkpoint {source} does not fit this model ({first}); use the same model config") from None
