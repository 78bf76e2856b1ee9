"""What ``advcore analyze gap`` computes from a finished run: the train/test robust generalization gap.

Plugins add their own analyses (entry-point group ``advcore.analyze``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

__all__ = ["generalization_gap"]


def generalization_gap(path: str | Path, *, n: int = 1000, pgd_steps: int = 10, restarts: int = 1,
                       device: str = "auto", batch_size: int = 256) -> dict[str, Any]:
    """PGD accuracy on (up to n of) the training samples the run used and on n test samples.

    The training samples are rebuilt from the run's data.subset (extra data is left out); both
    sides use the same attack, eps and norm = the run's, step eps/4, in eval mode.
    """
    from ..data.datasets import held_out_indices
    from ..data.user_data import load_dataset
    from ..evaluation.evaluate import load_model, run_attacks
    from ..kernel.plugins import Hooks, build_manager
    from ..data.subsets import subset_indices
    from ..engine import resolve_composition

    model, config, _ = load_model(path, device)
    train, test, info = load_dataset(config.data.dataset, data_dir=config.data.data_dir, download=config.data.download)
    if config.data.subset is None:
        used = torch.arange(len(train))
    else:  # a plugin's KIND:N is ranked by that plugin, as in training
        plugins, options = resolve_composition(config)
        hooks = Hooks(build_manager(plugins))
        used = subset_indices(config.data.subset, train, seed=config.seed,
                              choose=lambda kind, k: hooks.training_subset(config, options, train, kind, k))
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
