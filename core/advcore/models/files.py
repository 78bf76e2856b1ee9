"""Models that are not advcore runs: plain state dicts and RobustBench-style checkpoints.

Weights are read with safetensors, or with ``torch.load(weights_only=True)`` for ``.pt``
files: nothing is ever unpickled beyond tensors and plain containers. RobustBench's
Wide-ResNets (TRADES naming: ``block1.layer.0.convShortcut``) and PreAct ResNet-18s
(``layer1.0.shortcut.0``, ``bn``, ``linear``) are renamed to advcore's module names, and
``mu``/``sigma`` buffers become the model's input normalisation.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..errors import CheckpointError, ConfigError
from .architectures import MODELS, build_model

__all__ = ["read_state_dict", "robustbench_to_advcore", "model_from_state_dict", "STATE_DICT_SUFFIXES"]

STATE_DICT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
_WRAPPERS = ("state_dict", "model_state_dict", "model", "net")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a state dict file, unwrapped from ``{"state_dict": ...}`` and DataParallel's ``module.``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file {path} not found; pass a run directory, a checkpoint .json or a state dict file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - safetensors raises several types
            raise CheckpointError(f"{path} could not be read as safetensors ({exc}); check the file") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - unpickling errors come in many types
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(
                f"{path} is not a plain weights file that loads with weights_only=True ({first}); "
                f"re-save it as a state dict (torch.save(model.state_dict(), ...)) or as .safetensors"
            ) from None
    for key in _WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors; save model.state_dict()")
    if any(k.startswith("model.") for k in state):  # an advcore tensor file: keep only the model's weights
        state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


_RENAMES = [
    # RobustBench / TRADES Wide-ResNet
    (r"^conv1\.", "stem."),
    (r"^block(\d)\.layer\.(\d+)\.convShortcut\.", lambda m: f"layers.{int(m[1]) - 1}.{m[2]}.shortcut."),
    (r"^block(\d)\.layer\.(\d+)\.", lambda m: f"layers.{int(m[1]) - 1}.{m[2]}."),
    (r"^bn1\.", "final_bn."),
    (r"^fc\.", "head."),
    # RobustBench PreAct ResNet-18
    (r"^layer(\d)\.(\d+)\.shortcut\.0\.", lambda m: f"layers.{int(m[1]) - 1}.{m[2]}.shortcut."),
    (r"^layer(\d)\.(\d+)\.", lambda m: f"layers.{int(m[1]) - 1}.{m[2]}."),
    (r"^bn\.", "final_bn."),
    (r"^linear\.", "head."),
]


def robustbench_to_advcore(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename RobustBench/TRADES module names to advcore's (unknown names pass unchanged)."""
    out = {}
    for key, value in state.items():
        for pattern, repl in _RENAMES:
            new = re.sub(pattern, repl, key)
            if new != key:
                key = new
                break
        out[key] = value
    return out


def _normalisation(state: dict[str, torch.Tensor]) -> tuple[list[float] | None, list[float] | None, dict]:
    for mean_key, std_key in (("mu", "sigma"), ("mean", "std")):
        if mean_key in state and std_key in state:
            rest = {k: v for k, v in state.items() if k not in (mean_key, std_key)}
            return state[mean_key].flatten().tolist(), state[std_key].flatten().tolist(), rest
    return None, None, state


def model_from_state_dict(state: dict[str, torch.Tensor], *, arch: str, num_classes: int, in_channels: int,
                          image_size: int, width: int | None = None, mean=None, std=None,
                          source: str = "state dict") -> torch.nn.Module:
    """Build ``arch`` and load ``state`` into it, trying advcore's names, then RobustBench's."""
    if arch not in MODELS:
        raise ConfigError(f"--arch: unknown model {arch!r}; choose one of: {', '.join(MODELS)}")
    candidates = [state, robustbench_to_advcore(state)]
    errors = []
    for candidate in candidates:
        found_mean, found_std, candidate = _normalisation(candidate)
        kwargs = {"width": width} if width is not None else {}
        m, s = (mean, std) if mean is not None else (found_mean, found_std)
        if m is not None:
            kwargs.update(mean=m, std=s)
        try:
            model = build_model(arch, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                                **kwargs)
        except ValueError as exc:
            raise ConfigError(f"--arch {arch}: {exc}") from None
        if getattr(model, "mean", None) is not None:  # the buffers were built from the file or the flags
            candidate = {**candidate, "mean": model.mean, "std": model.std}
        expected = set(model.state_dict())
        missing, unexpected = sorted(expected - set(candidate)), sorted(set(candidate) - expected)
        if not missing and not unexpected:
            try:
                model.load_state_dict(candidate)
                return model
            except RuntimeError as exc:
                errors.append(str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc))
                continue
        errors.append(f"missing {missing[:2]}, unexpected {unexpected[:2]}")
    raise CheckpointError(
        f"{source} does not fit --arch {arch} with {num_classes} classes ({errors[0]}); "
        f"pass the architecture (and --width) it was trained with"
    )
