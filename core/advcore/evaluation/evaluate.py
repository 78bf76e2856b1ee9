"""Evaluate a model: clean accuracy, white-box and black-box attacks, AutoAttack, sanity checks.

A model is an advcore checkpoint (run directory or manifest ``.json``; ``ema=True`` takes the
averaged weights) or a plain state dict file given with its architecture and dataset. Results
are one flat dict (``clean_acc`` and one ``<attack>_acc`` per attack), printable as JSON or
as a Markdown table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch

from ..runtime import checkpoint as ckpt
from ..data.datasets import DatasetInfo, held_out_indices
from ..data.user_data import load_dataset
from ..errors import CheckpointError, ConfigError
from .eval_attacks import Attack, attack_flags, parse_attacks
from ..models.files import STATE_DICT_SUFFIXES, model_from_state_dict, read_state_dict
from ..engine import info_stats, load_model, resolve_device
from ..runtime.speed import keep_host_memory

__all__ = ["EvalTarget", "load_model", "load_target", "run_checkpoint", "evaluate_model", "eval_data", "run_attacks", "evaluate_checkpoint",
           "markdown_table", "format_result", "read_result", "source_label"]


@dataclass
class EvalTarget:
    """A model ready to evaluate plus what is needed to find its test data."""

    model: torch.nn.Module
    dataset: str
    data_dir: str | None
    seed: int
    eps: float | None
    source: str
    run_dir: Path | None = None
    norm: str | None = None  # the run's attack.norm; None for a plain state dict

    def threat_model(self, norm: str | None) -> str:
        """The norm asked for, else the run's, else Linf."""
        return norm or self.norm or "Linf"


def _is_state_dict_file(path: Path) -> bool:
    return path.suffix in STATE_DICT_SUFFIXES and path.is_file()


def run_checkpoint(path: str | Path, tag: str = "best") -> Path:
    """A run directory's ``best`` (default) or ``last`` checkpoint; other paths pass unchanged."""
    path = Path(path)
    if tag not in ("best", "last"):
        raise ConfigError(f"--checkpoint: invalid value {tag!r} (allowed: best, last)")
    if not path.is_dir():
        return path
    manifest = path / "checkpoints" / f"{tag}.json"
    if tag == "best" and not manifest.exists() and (path / "checkpoints" / "last.json").exists():
        raise CheckpointError(f"{path} has no best checkpoint yet (no epoch was evaluated); "
                              f"pass --checkpoint last")
    return path / "checkpoints" / tag


def load_target(path: str | Path | None, *, device: str = "auto", ema: bool = False, arch: str | None = None,
                dataset: str | None = None, data_dir: str | None = None, width: int | None = None,
                normalize: bool = False, checkpoint: str = "last", model: str | None = None,
                model_kwargs: dict | None = None) -> EvalTarget:
    """An advcore checkpoint (a run directory means its ``checkpoint``: last here, best in
    ``evaluate_checkpoint`` and ``advcore eval``), or a state
    dict file (``.safetensors``/``.pt``) with ``arch`` or ``model`` (package.module:factory) and ``dataset``.

    The model comes back in eval mode on ``device``.
    """
    if model is not None:
        if ema:
            raise ConfigError("--ema needs an advcore checkpoint (run directory or .json); --weights holds one set")
        return _factory_target(model, model_kwargs, path, device=device, dataset=dataset, data_dir=data_dir)
    if path is None:
        raise ConfigError("nothing to evaluate: pass a run directory, a checkpoint or --model with --weights")
    path = run_checkpoint(path, checkpoint)
    if not _is_state_dict_file(path):
        model, config, _ = load_model(path, device, ema=ema)
        manifest_path = ckpt.checkpoint_paths(path)
        run_dir = manifest_path.parent.parent if manifest_path.parent.name == "checkpoints" else None
        return EvalTarget(model, dataset or config.data.dataset, data_dir or config.data.data_dir, config.seed,
                          config.attack.eps, str(path), run_dir, config.attack.norm)
    if ema:
        raise ConfigError("--ema needs an advcore checkpoint (run directory or .json), not a state dict file")
    if not arch or not dataset:
        raise ConfigError(f"{path.name} is a plain state dict: pass --arch (e.g. wrn-28-10) and --dataset "
                          f"(e.g. cifar10) so the model can be built")
    _, _, info = load_dataset(dataset, data_dir=data_dir)
    mean, std = info_stats(info) if normalize else (None, None)
    model = model_from_state_dict(read_state_dict(path), arch=arch, num_classes=info.num_classes,
                                  in_channels=info.channels, image_size=info.size, width=width, mean=mean, std=std,
                                  source=str(path))
    return EvalTarget(model.to(resolve_device(device)).eval(), dataset, data_dir, 0, None, str(path))


def _factory_target(factory: str, kwargs: dict | None, weights: str | Path | None, *, device: str,
                    dataset: str | None, data_dir: str | None) -> EvalTarget:
    """``--model package.module:factory --weights FILE``: the user's module with a plain state dict."""
    from ..models.architectures import build_user_model

    if not dataset:
        raise ConfigError(f"--model {factory} needs --dataset (a dataset name or package.module:factory) "
                          f"to find its test data")
    net = build_user_model(factory, kwargs)
    source = factory
    if weights is not None:
        state = read_state_dict(weights)
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            detail = lines[1] if len(lines) > 1 else lines[0] if lines else "keys differ"
            raise CheckpointError(f"{weights} does not fit {factory} ({detail}); pass the factory "
                                  f"(and --set model.kwargs) it was trained with") from None
        source = str(weights)
    return EvalTarget(net.to(resolve_device(device)).eval(), dataset, data_dir, 0, None, source)


def eval_data(dataset: str, data_dir: str | None, n: int | None, seed: int
              ) -> tuple[torch.Tensor, torch.Tensor, DatasetInfo]:
    """A fixed random subset of the test split (the one training evaluated on, for the same seed)."""
    _, test, info = load_dataset(dataset, data_dir=data_dir)
    n = len(test) if n is None else min(n, len(test))
    idx = held_out_indices(len(test), n, seed)
    images = test.images[idx]
    return (images.float() / 255 if images.dtype == torch.uint8 else images.float()), test.labels[idx], info


def run_attacks(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, attacks: Iterable[str],
                norm: str = "Linf", pgd_steps: int = 20, restarts: int = 1, step_size: float | None = None,
                batch_size: int = 256, aa_version: str = "standard", aa_attacks: Iterable[str] | None = None,
                square_queries: int = 5000, seed: int = 0, state_dir=None, progress: bool = True) -> dict[str, Any]:
    """Accuracy under each attack on (x, y): ``clean_acc``, one ``<attack>_acc`` per attack and, with
    several attacks, ``worst_case_acc`` (a sample counts only if it survives every attack)."""
    specs = parse_attacks(attacks, pgd_steps=pgd_steps, restarts=restarts, square_queries=square_queries,
                          aa_version=aa_version, aa_attacks=aa_attacks)
    clean, flags, details = attack_flags(model, x, y, specs, eps=eps, norm=norm, step_size=step_size,
                                         batch_size=batch_size, seed=seed, state_dir=state_dir, progress=progress)
    results: dict[str, Any] = {"clean_acc": clean.float().mean().item()}
    results.update({key: f.float().mean().item() for key, f in flags.items()})
    if len(flags) > 1:
        results["worst_case_acc"] = torch.stack(list(flags.values())).all(0).float().mean().item()
    results.update(details)
    return results


def evaluate_checkpoint(path: str | Path | None, *, attacks: Iterable[str], n: int | None = None,
                        eps: float | None = None, norm: str | None = None, pgd_steps: int = 20, restarts: int = 1,
                        step_size: float | None = None, device: str = "auto", aa_version: str = "standard",
                        aa_attacks: Iterable[str] | None = None, square_queries: int = 5000, batch_size: int = 256,
                        ema: bool = False, arch: str | None = None, dataset: str | None = None,
                        data_dir: str | None = None, width: int | None = None, normalize: bool = False,
                        checks: bool = False, surrogate: str | Path | None = None,
                        corruptions: str | Path | None = None, out: str | Path | None = None, progress: bool = True,
                        checkpoint: str = "best", model: str | None = None,
                        model_kwargs: dict | None = None) -> dict[str, Any]:
    """Everything ``advcore eval`` prints, as one dict; ``norm=None`` is the run's threat model (else Linf)."""
    loading = dict(device=device, arch=arch, dataset=dataset, data_dir=data_dir, width=width, normalize=normalize)
    target = load_target(path, ema=ema, checkpoint=checkpoint, model=model, model_kwargs=model_kwargs, **loading)
    keep_host_memory("auto", next(target.model.parameters(), torch.empty(0)).device)  # attacks allocate as training steps do
    x, y, info = eval_data(target.dataset, target.data_dir, n, target.seed)
    state_dir = Path(out) if out else (target.run_dir / "eval" if target.run_dir else None)
    surrogate_model = load_target(surrogate, **loading).model if (checks and surrogate) else None
    label = str(path) if path is not None else target.source
    result: dict[str, Any] = {"checkpoint": label, "weights": "ema" if ema else "model"}
    if path is not None and Path(path).is_dir():
        result["checkpoint_tag"] = checkpoint
    result.update(evaluate_model(
        target.model, x, y, attacks=attacks, dataset=target.dataset,
        eps=eps if eps is not None else (target.eps or info.default_eps), norm=target.threat_model(norm),
        pgd_steps=pgd_steps, restarts=restarts, step_size=step_size, aa_version=aa_version, aa_attacks=aa_attacks,
        square_queries=square_queries, batch_size=batch_size, seed=target.seed, checks=checks,
        surrogate=surrogate_model, corruptions=corruptions, n=n, state_dir=state_dir, progress=progress))
    return result


def evaluate_model(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, attacks: Iterable[str], eps: float,
                   dataset: str = "tensors", norm: str = "Linf", pgd_steps: int = 20, restarts: int = 1,
                   step_size: float | None = None, aa_version: str = "standard",
                   aa_attacks: Iterable[str] | None = None, square_queries: int = 5000, batch_size: int = 256,
                   seed: int = 0, checks: bool = False, surrogate: torch.nn.Module | None = None,
                   corruptions: str | Path | None = None, n: int | None = None, state_dir=None,
                   progress: bool = True) -> dict[str, Any]:
    """The report of ``advcore eval`` for any model on (x, y): the masking checks reuse its PGD result."""
    result: dict[str, Any] = {"dataset": dataset, "n": int(y.shape[0]), "eps": eps, "norm": norm}
    specs = parse_attacks(attacks, pgd_steps=pgd_steps, restarts=restarts, square_queries=square_queries,
                          aa_version=aa_version, aa_attacks=aa_attacks)
    clean, flags, details = attack_flags(model, x, y, specs, eps=eps, norm=norm, step_size=step_size,
                                         batch_size=batch_size, seed=seed, state_dir=state_dir, progress=progress)
    result["clean_acc"] = clean.float().mean().item()
    result.update({key: f.float().mean().item() for key, f in flags.items()})
    if len(flags) > 1:
        result["worst_case_acc"] = torch.stack(list(flags.values())).all(0).float().mean().item()
    result.update(details)
    if checks:
        from .eval_checks import gradient_masking_checks, summarize_checks

        same = Attack("pgd", steps=pgd_steps, restarts=1)  # the report's PGD-k is the checks' baseline
        known = {(eps, pgd_steps, 1): flags[same.key].float().mean().item()} if same.key in flags else {}
        found = gradient_masking_checks(model, x, y, eps=eps, norm=norm, steps=pgd_steps, step_size=step_size,
                                        surrogate=surrogate, batch_size=batch_size, seed=seed, progress=progress,
                                        known=known)
        result["checks"] = summarize_checks(found)
    if corruptions:
        from .corruptions import evaluate_corruptions

        result["corruptions"] = evaluate_corruptions(model, corruptions, n=n, batch_size=batch_size,
                                                     progress=progress)
    return result


def _fmt(value: Any) -> str:
    return f"{100 * value:.2f}" if isinstance(value, float) else str(value)


def markdown_table(results: list[dict[str, Any]]) -> str:
    """One row per result, one column per accuracy (in %), attacks in first-seen order."""
    if not results:
        raise ConfigError("no results to tabulate; pass eval JSON files")
    columns: list[str] = []
    for r in results:
        columns += [k for k, v in r.items() if k.endswith("_acc") and isinstance(v, float) and k not in columns]
    names = [k.removesuffix("_acc").replace("_", " ") for k in columns]
    lines = ["| model | n | eps | " + " | ".join(names) + " |", "|---|---:|---:|" + "---:|" * len(columns)]
    for r in results:
        eps = r.get("eps")
        eps_text = f"{eps:.4g}" + ("" if r.get("norm", "Linf") == "Linf" else f" ({r['norm']})") if eps else "-"
        cells = [_fmt(r[c]) if c in r else "-" for c in columns]
        label = r.get("label") or r.get("checkpoint", "?")
        if r.get("weights") == "ema" and not label.endswith("(EMA)"):
            label += " (EMA)"
        lines.append(f"| {label} | {r.get('n', '-')} | {eps_text} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def format_result(result: dict[str, Any]) -> str:
    """The plain-text form of an evaluation: one ``key value`` line each, checks as PASS/FAIL lines."""
    lines = []
    for key, value in result.items():
        if key == "checks":
            lines.append("checks (gradient masking):")
            for r in value["results"]:
                mark = "skip" if r["passed"] is None else "PASS" if r["passed"] else "FAIL"
                lines.append(f"  {mark:<5} {r['name']:<17} {r['detail']}")
        elif key == "corruptions":
            lines.append(f"{'corruptions':>18}  mean {value['mean_acc']:.4f}")
            lines += [f"{name:>18}  {v['mean']:.4f}  (" + " ".join(f"{v[str(s)]:.3f}" for s in range(1, 6)) + ")"
                      for name, v in value.items() if name != "mean_acc"]
        elif isinstance(value, dict):
            lines.append(f"{key:>18}  " + "  ".join(f"{k} {v:.4f}" for k, v in value.items()))
        else:
            lines.append(f"{key:>18}  {value:.4f}" if isinstance(value, float) else f"{key:>18}  {value}")
    return "\n".join(lines)


def read_result(source: str | Path) -> dict[str, Any]:
    """An eval result (JSON file, or RUN/eval/eval.json), else a run's last metrics record; with a ``label``."""
    import json

    path = Path(source)
    label = source_label(path)
    try:
        if path.is_dir() and (path / "eval" / "eval.json").is_file():
            result = json.loads((path / "eval" / "eval.json").read_text())
        elif path.is_dir() and (path / "metrics.jsonl").is_file():
            lines = [ln for ln in (path / "metrics.jsonl").read_text().splitlines() if ln.strip()]
            result = dict(json.loads(lines[-1]), checkpoint=str(path)) if lines else {}
        elif path.is_file():
            result = json.loads(path.read_text())
            if isinstance(result, dict) and "tensors_file" in result:  # a checkpoint manifest
                result = dict(result.get("metrics", {}), checkpoint=str(path))
        else:
            result = {}
    except (OSError, ValueError):
        raise ConfigError(f"{path} could not be read as JSON; pass eval JSON files or run directories") from None
    if not isinstance(result, dict) or not any(k.endswith("_acc") for k in result):
        raise ConfigError(f"{path} holds no accuracies; pass files from 'advcore eval --json' or run directories")
    if "label" not in result:
        result["label"] = source_label(result["checkpoint"]) if "checkpoint" in result else label
        if result.get("weights") == "ema":
            result["label"] += " (EMA)"
    return result


def source_label(path: str | Path) -> str:
    """A short name for a model in tables and legends: the run directory's name (plus the checkpoint tag)."""
    path = Path(path)
    if path.suffix == ".json" and path.parent.name == "checkpoints":
        return f"{path.parent.parent.name}/{path.stem}"
    return path.stem if path.suffix else path.name
