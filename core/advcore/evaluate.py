"""Evaluate a checkpoint: clean accuracy, PGD-k with restarts, AutoAttack (pyautoattack)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from . import checkpoint as ckpt
from .attacks import model_mode, pgd_eval
from .config import RunConfig, validate_options
from .data import held_out_indices, load_dataset
from .plugins import Hooks, build_manager, resolve
from .trainer import build_model_from_spec, load_model_tensors, resolve_device

__all__ = ["load_model", "run_attacks"]


def load_model(path: str | Path, device: str = "auto") -> tuple[torch.nn.Module, RunConfig, dict[str, Any]]:
    """Rebuild a checkpoint's model, with the plugins it was trained with configuring it.

    A model whose head was swapped by a plugin (HE) therefore evaluates with that head and
    no plugin flags.
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
    load_model_tensors(model, tensors, path)
    return model.to(dev).eval(), config, manifest


def run_attacks(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, attacks: list[str],
                pgd_steps: int = 20, restarts: int = 1, step_size: float | None = None, batch_size: int = 256,
                aa_version: str = "standard", seed: int = 0, progress=None) -> dict[str, float]:
    """Accuracy under each attack on (x, y); keys: clean_acc and ``<attack>_acc``."""
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    step_size = eps / 4 if step_size is None else step_size
    results: dict[str, float] = {}
    with model_mode(model, "eval"):
        with torch.no_grad():
            preds = torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(y), batch_size)])
        results["clean_acc"] = (preds == y).float().mean().item()
        for attack in attacks:
            torch.manual_seed(seed)
            if attack in ("pgd", "cw"):
                correct = 0
                for i in range(0, len(y), batch_size):
                    adv = pgd_eval(model, x[i:i + batch_size], y[i:i + batch_size], eps=eps, step_size=step_size,
                                   steps=pgd_steps, restarts=restarts, loss="ce" if attack == "pgd" else "cw")
                    with torch.no_grad():
                        correct += (model(adv).argmax(1) == y[i:i + batch_size]).sum().item()
                results[f"{attack}{pgd_steps}_acc"] = correct / len(y)
            elif attack == "autoattack":
                from pyautoattack import AutoAttack

                aa = AutoAttack(model, eps=eps, norm="Linf", version=aa_version, device=str(device), seed=seed)
                adv = aa.run_standard_evaluation(x, y, batch_size=batch_size)
                x_adv = adv[0] if isinstance(adv, tuple) else adv
                with torch.no_grad():
                    pred = torch.cat([model(x_adv[i:i + batch_size]).argmax(1) for i in range(0, len(y), batch_size)])
                results["autoattack_acc"] = (pred == y).float().mean().item()
            else:
                raise ValueError(f"unknown attack {attack!r}; choose from pgd, cw, autoattack")
    return results


def evaluate_checkpoint(path: str | Path, *, attacks: list[str], n: int | None = None, eps: float | None = None,
                        pgd_steps: int = 20, restarts: int = 1, device: str = "auto",
                        aa_version: str = "standard", batch_size: int = 256) -> dict[str, Any]:
    model, config, manifest = load_model(path, device)
    _, test, info = load_dataset(config.data.dataset, data_dir=config.data.data_dir, download=config.data.download)
    n = len(test) if n is None else min(n, len(test))
    idx = held_out_indices(len(test), n, config.seed)
    x = test.images[idx].float() / 255
    eps = eps if eps is not None else (config.attack.eps or info.default_eps)
    results = run_attacks(model, x, test.labels[idx], eps=eps, attacks=attacks, pgd_steps=pgd_steps,
                          restarts=restarts, aa_version=aa_version, batch_size=batch_size, seed=config.seed)
    return {"checkpoint": str(path), "n": n, "eps": eps, **results}
