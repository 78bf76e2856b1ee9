"""``advcore export``: a run's weights out as a plain PyTorch state dict, and how to load it."""

from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointError, ConfigError

__all__ = ["export_state_dict", "loading_lines"]


def export_state_dict(source: str | Path, out: str | Path, *, ema: bool = False,
                      checkpoint: str = "best") -> tuple[Path, list[str]]:
    """Write a checkpoint's model (or EMA) weights as a plain safetensors state dict.

    Returns the file and the three lines of PyTorch that load it into a fresh module.
    """
    from safetensors.torch import save_file

    from ..runtime.checkpoint import checkpoint_paths, load_checkpoint
    from .evaluate import run_checkpoint

    out = Path(out)
    if out.suffix != ".safetensors":
        raise ConfigError(f"export: {out} must end in .safetensors (a plain state dict, no pickle)")
    manifest_path = checkpoint_paths(run_checkpoint(source, checkpoint))
    manifest, tensors = load_checkpoint(manifest_path)
    prefix = "ema." if ema else "model."
    state = {k[len(prefix):]: v.contiguous() for k, v in tensors.items()
             if k.startswith(prefix) and not k.startswith("ema._")}
    if not state:
        raise CheckpointError(f"checkpoint {manifest_path} holds no EMA weights; train with --set ema.decay=0.999 "
                              f"or export without --ema")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out))
    return out, loading_lines(manifest["model"], out, manifest_path)


def loading_lines(spec: dict, out: Path, manifest_path: Path) -> list[str]:
    """Import, build, load: how to get the exported weights back into a module."""
    load = f"model.load_state_dict(load_file({str(out)!r}))"
    if spec.get("head"):  # a plugin swapped the head (HE): rebuild with the plugin, then load
        return [f"from safetensors.torch import load_file; from advcore.evaluate import load_model",
                f"model = load_model({str(manifest_path)!r}, device='cpu')[0]  # rebuilds the plugin's head", load]
    kwargs = spec.get("kwargs") or {}
    factory = spec.get("factory")
    if factory and factory.startswith("live:"):
        label = factory.split(":", 2)[2]
        return ["from safetensors.torch import load_file",
                f"model = ...  # build your {label} as for training" + (f" with {kwargs}" if kwargs else ""), load]
    if factory:
        module, _, name = factory.partition(":")
        head, _, attr = name.partition(".")
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        return [f"from safetensors.torch import load_file; from {module} import {head}",
                f"model = {name}({args})", load]
    args = ", ".join([f"{spec['arch']!r}", f"num_classes={spec['num_classes']}", f"in_channels={spec['in_channels']}",
                      f"image_size={spec['image_size']}"] + [f"{k}={v!r}" for k, v in kwargs.items()])
    return ["from safetensors.torch import load_file; from advcore.models.architectures import build_model",
            f"model = build_model({args})", load]
