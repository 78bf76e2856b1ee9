"""What ``advcore analyze`` computes from finished runs: instance difficulty and the generalization gap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .checkpoint import checkpoint_paths
from .difficulty import d_distance, group_curves, load_table, write_csv

__all__ = ["difficulty_report", "generalization_gap"]


def difficulty_report(run: str | Path, *, csv: str | Path | None = None, compare: list[str | Path] = (),
                      groups: int = 0) -> dict[str, Any]:
    """Write the run's d(x) per trained sample to a CSV; D-distances to other runs; group loss curves."""
    table, history = load_table(run)
    if csv is None:
        manifest = checkpoint_paths(run)
        csv = manifest.parent.parent / "difficulty.csv" if manifest.parent.name == "checkpoints" else manifest.with_suffix(".difficulty.csv")
    report: dict[str, Any] = {"run": str(run), "csv": str(write_csv(table, csv)), "samples": len(table),
                              "mean_loss": table.loss.mean().item()}
    if compare:
        report["d_distance"] = {}
        for other in compare:
            d1, d2 = table.aligned(load_table(other)[0])
            report["d_distance"][str(other)] = d_distance(d1, d2)
    if groups:
        report["group_loss"] = group_curves(table, history["loss_sum"], history["visits"], groups)
    return report


def generalization_gap(path: str | Path, *, n: int = 1000, pgd_steps: int = 10, restarts: int = 1,
                       device: str = "auto", batch_size: int = 256) -> dict[str, Any]:
    """PGD accuracy on (up to n of) the training samples the run used and on n test samples.

    The training samples are rebuilt from the run's data.subset (extra data is left out); both
    sides use the same attack, eps and norm = the run's, step eps/4, in eval mode.
    """
    from .data import held_out_indices, load_dataset
    from .difficulty import subset_indices
    from .evaluate import load_model, run_attacks

    model, config, _ = load_model(path, device)
    train, test, info = load_dataset(config.data.dataset, data_dir=config.data.data_dir, download=config.data.download)
    used = (torch.arange(len(train)) if config.data.subset is None else
            subset_indices(config.data.subset, train, seed=config.seed, difficulty_file=config.data.difficulty_file))
    pick = used[held_out_indices(len(used), min(n, len(used)), config.seed)]
    test_pick = held_out_indices(len(test), min(n, len(test)), config.seed)
    eps = config.attack.eps if config.attack.eps is not None else info.default_eps
    out: dict[str, Any] = {"checkpoint": str(path), "eps": eps, "norm": config.attack.norm, "pgd_steps": pgd_steps}
    for split, ds, idx in (("train", train, pick), ("test", test, test_pick)):
        res = run_attacks(model, ds.images[idx].float() / 255, ds.labels[idx], eps=eps, attacks=["pgd"],
                          norm=config.attack.norm, pgd_steps=pgd_steps, restarts=restarts, batch_size=batch_size,
                          seed=config.seed)
        out[f"{split}_n"] = int(idx.numel())
        out[f"{split}_clean_acc"] = res["clean_acc"]
        out[f"{split}_pgd_acc"] = res[f"pgd{pgd_steps}_acc"]
    out["robust_gap"] = out["train_pgd_acc"] - out["test_pgd_acc"]
    out["clean_gap"] = out["train_clean_acc"] - out["test_clean_acc"]
    return out
