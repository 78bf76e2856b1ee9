"""The Python entry points: ``train``, ``evaluate`` and ``attack`` (docs/python-api.md).

They take what a researcher already has: any ``nn.Module`` (an instance, a zero-argument
callable or a ``package.module:factory`` string) and any map-style ``Dataset`` of images in
[0, 1] with integer labels. Training goes through the same config model, validation and
loop as ``advcore train``; evaluation returns the same dict as ``advcore eval --json``.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from .errors import ConfigError
from .factories import is_factory, register_live

__all__ = ["TrainResult", "train", "evaluate", "attack"]


@dataclass
class TrainResult:
    """What ``train`` returns: one metrics record per epoch, the trained model, the run directory."""

    metrics: list[dict[str, Any]]
    model: torch.nn.Module
    out: Path | None

    @property
    def final(self) -> dict[str, Any]:
        """The last epoch's metrics (``clean_acc``, ``robust_acc``, ``train_loss``, ...)."""
        return self.metrics[-1] if self.metrics else {}


def _model_factory(model: Any) -> tuple[str | None, torch.nn.Module | None]:
    """(model.factory value, the instance that will be trained in place, if one was given)."""
    if model is None or isinstance(model, str):
        return model, None
    if isinstance(model, torch.nn.Module):
        initial = copy.deepcopy(model)  # later builds (e.g. HAT's standard network) start from the same init
        given = [model]

        def build() -> torch.nn.Module:
            return given.pop() if given else copy.deepcopy(initial)

        return register_live(build, type(model).__name__), model
    if callable(model):
        return register_live(model, getattr(model, "__name__", type(model).__name__)), None
    raise ConfigError(f"model: expected an nn.Module, a callable returning one or 'package.module:factory', "
                      f"got {type(model).__name__}")


def _data_factory(train_data: Any, test_data: Any) -> str | None:
    if train_data is None and test_data is None:
        return None
    if isinstance(train_data, str):
        if test_data is not None:
            raise ConfigError("train_data as a name or factory string covers both splits; drop test_data")
        return train_data
    if train_data is None or test_data is None:
        raise ConfigError("pass both train_data and test_data (torch Datasets), or neither")
    splits = {True: train_data, False: test_data}
    return register_live(lambda train=True: splits[bool(train)], type(train_data).__name__)


def _settings_list(settings: Mapping[str, Any] | Sequence[str] | None) -> list[str]:
    import json

    if settings is None:
        return []
    if isinstance(settings, Mapping):
        return [f"{k}={json.dumps(v)}" for k, v in settings.items()]
    return list(settings)


def train(model: Any = None, train_data: Any = None, test_data: Any = None, *, plugins: Iterable[str] = (),
          options: Mapping[str, Mapping[str, Any]] | None = None, config: str | Path | None = None,
          settings: Mapping[str, Any] | Sequence[str] | None = None, out: str | Path | None = None,
          resume: bool = False, quiet: bool = False, **fields: Any) -> TrainResult:
    """Train with ``plugins`` exactly as ``advcore train`` does; bad settings raise one-line ConfigErrors.

    ``settings`` are the CLI's ``--set`` (``{"attack.steps": 3}`` or ``["attack.steps=3"]``),
    ``options`` each plugin's options (``{"trades": {"beta": 6}}``), ``fields`` top-level keys
    (``epochs=2``, ``seed=1``, ``device="cpu"``). A model instance is trained in place and
    returned; otherwise the returned model is rebuilt from the last checkpoint (eval mode).
    """
    from .kernel.config import load_config
    from .evaluation.evaluate import load_model
    from .engine import train as run_training

    factory, instance = _model_factory(model)
    dataset = _data_factory(train_data, test_data)
    extra = {"model.factory": factory, "data.dataset": dataset, **fields}
    cfg = load_config(config, _settings_list(settings), **extra)
    update: dict[str, Any] = {}
    if plugins:
        update["plugins"] = list(dict.fromkeys([*cfg.plugins, *plugins]))
    if options:
        merged = {**cfg.options, **{k: dict(v) for k, v in options.items()}}
        update["options"] = merged
    if update:  # validated again: a bad plugin option is the same one-line error as on the CLI
        cfg = load_config(None, base={**cfg.model_dump(mode="json"), **update})
    log = (lambda *a, **k: None) if quiet else print
    with tempfile.TemporaryDirectory(prefix="advcore-") as tmp:
        run_dir = Path(out) if out is not None else Path(tmp)
        history = run_training(cfg, run_dir, resume=resume, log=log)
        trained = instance if instance is not None else load_model(run_dir / "checkpoints" / "last", cfg.device)[0]
    return TrainResult(history, trained, Path(out) if out is not None else None)


def _eval_tensors(data: Any, n: int | None, seed: int, data_dir: str | None):
    """(x, y, dataset label, default eps) from a Dataset, an (x, y) pair or a dataset name/factory."""
    from .data.datasets import held_out_indices
    from .evaluation.evaluate import eval_data
    from .data.user_data import USER_DEFAULT_EPS, from_torch_dataset

    if isinstance(data, str):
        x, y, info = eval_data(data, data_dir, n, seed)
        return x, y, data, info.default_eps
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        data = torch.utils.data.TensorDataset(*data)
    ds = from_torch_dataset(data, type(data).__name__, "test")
    count = len(ds) if n is None else min(n, len(ds))
    idx = held_out_indices(len(ds), count, seed)
    images = ds.images[idx]
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    return x, ds.labels[idx], type(data).__name__, USER_DEFAULT_EPS


def evaluate(model: Any, data: Any = None, *, attacks: Iterable[str] = ("pgd", "autoattack"), n: int | None = None,
             eps: float | None = None, norm: str | None = None, checks: bool = False, seed: int = 0,
             data_dir: str | None = None, surrogate: torch.nn.Module | None = None, **options: Any) -> dict[str, Any]:
    """The ``advcore eval --json`` report for any ``nn.Module`` (or a run directory / checkpoint path).

    ``data`` is a map-style Dataset, an ``(x, y)`` pair of tensors, or a dataset name or
    ``package.module:factory`` (its test split). ``options`` are ``advcore eval``'s:
    ``pgd_steps``, ``restarts``, ``step_size``, ``aa_version``, ``aa_attacks``,
    ``square_queries``, ``batch_size``, ``progress``. ``norm`` defaults to Linf (for a run: the
    run's). The model is evaluated in eval mode on its own device, and its mode is restored afterwards.
    """
    from .evaluation.evaluate import evaluate_checkpoint, evaluate_model

    if isinstance(model, (str, Path)) and not is_factory(str(model)):
        return evaluate_checkpoint(model, attacks=attacks, n=n, eps=eps, norm=norm,
                                   checks=checks, dataset=data if isinstance(data, str) else None,
                                   data_dir=data_dir, **options)
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"evaluate: model must be an nn.Module or a run directory, got {type(model).__name__}")
    if data is None:
        raise ConfigError("evaluate: pass data (a Dataset, an (x, y) pair, or a dataset name) to evaluate on")
    x, y, label, default_eps = _eval_tensors(data, n, seed, data_dir)
    result: dict[str, Any] = {"checkpoint": type(model).__name__, "weights": "model"}
    result.update(evaluate_model(model, x, y, attacks=attacks, dataset=label, eps=default_eps if eps is None else eps,
                                 norm=norm or "Linf", seed=seed, checks=checks, surrogate=surrogate, n=n, **options))
    return result


ATTACKS = ("pgd", "cw", "fgsm", "autoattack")


def attack(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, kind: str = "pgd", eps: float = 8 / 255,
           steps: int = 10, step_size: float | None = None, restarts: int = 1, norm: str = "Linf",
           aa_version: str = "standard", aa_attacks: Sequence[str] | None = None,
           seed: int | None = None) -> torch.Tensor:
    """Adversarial examples for one batch (inputs in [0, 1]) with the core's attacks, model in eval mode.

    ``pgd`` (cross-entropy) and ``cw`` (margin loss) run ``steps`` steps of size ``step_size``
    (default eps/4) from a random start, keeping the first restart that fools the model
    (gradients are enabled inside, so a caller's ``torch.no_grad()`` does not stop it);
    ``fgsm`` is one step of size eps; ``autoattack`` runs pyautoattack's ``aa_version``
    (``"custom"`` with ``aa_attacks``, e.g. ``["apgd-ce"]``).
    """
    from .attacks import NORMS, model_mode, pgd_eval

    if kind not in ATTACKS:
        raise ConfigError(f"attack: unknown kind {kind!r} (allowed: {', '.join(ATTACKS)})")
    if norm not in NORMS:
        raise ConfigError(f"attack: invalid norm {norm!r} (allowed: {', '.join(NORMS)})")
    if seed is not None:
        torch.manual_seed(seed)
    with model_mode(model, "eval"), torch.enable_grad():  # works under a caller's no_grad too
        if kind == "autoattack":
            from pyautoattack import AutoAttack

            from .evaluation.eval_attacks import parse_attacks

            parse_attacks([], aa_version=aa_version, aa_attacks=aa_attacks)  # the CLI's checks and messages
            aa = AutoAttack(model, norm=norm, eps=eps, version=aa_version, device=x.device,
                            attacks=list(aa_attacks) if aa_version == "custom" else None,
                            seed=0 if seed is None else seed)
            with torch.no_grad():
                classes = model(x[:1]).shape[1]
            for part in (aa.apgd_targeted, aa.fab):  # targeted attacks need classes - 1 targets at most
                part.n_target_classes = min(part.n_target_classes, classes - 1)
            x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=x.shape[0])
            return x_adv.to(x.device)
        if kind == "fgsm":
            from .attacks import ce_loss, input_gradient, project, step_direction

            grad, _ = input_gradient(model, x.clone(), y, ce_loss)
            e = torch.full((x.shape[0],), float(eps), device=x.device)
            return project(x + eps * step_direction(grad, norm), x, e, norm).detach()
        alpha = eps / 4 if step_size is None else step_size
        return pgd_eval(model, x, y, eps=eps, step_size=alpha, steps=steps, restarts=restarts,
                        loss="ce" if kind == "pgd" else "cw", norm=norm).detach()
