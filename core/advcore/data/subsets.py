"""Which training samples a run uses: ``data.subset`` as N, ``random:N`` or a plugin's ``KIND:N``.

The core draws class-balanced subsets (N // K per class, +1 for the first N % K classes):
the first N of each class, or N at random within each class. Any other ``KIND:N`` (e.g. a
ranking by instance difficulty) is asked of the enabled plugins through the
``advcore_training_subset`` hook; a plugin answers with ``ranked_subset`` over its own scores,
so the core never names the method that ranks.
"""

from __future__ import annotations

from typing import Callable

import torch

from .datasets import DataError, Dataset, class_balanced_subset

__all__ = ["subset_indices", "ranked_subset"]  # the spec is validated by config.DataConfig

Chooser = Callable[[str, int], "torch.Tensor | None"]  # (kind, n) -> indices, or None when no plugin knows kind


def _per_class(n: int, num_classes: int) -> list[int]:
    return [n // num_classes + (1 if c < n % num_classes else 0) for c in range(num_classes)]


def ranked_subset(spec: str, dataset: Dataset, candidates: torch.Tensor, rank: torch.Tensor) -> torch.Tensor:
    """Sorted indices: per class, the ``want`` candidates of lowest ``rank`` (ties: candidate order).

    ``candidates`` are dataset indices in ascending order and ``rank[k]`` scores ``candidates[k]``.
    """
    kind, n = spec.split(":")
    n, labels = int(n), dataset.labels.cpu()
    if n > labels.numel():
        raise DataError(f"data.subset {spec}: the training set has only {labels.numel()} samples; lower N")
    chosen = []
    for c, want in enumerate(_per_class(n, dataset.num_classes)):
        mine = (labels[candidates] == c).nonzero().squeeze(1)
        if mine.numel() < want:
            raise DataError(f"data.subset {spec}: class {c} has {mine.numel()} ranked samples but {want} are "
                            "needed for a class-balanced subset; lower N")
        order = rank[mine].sort(stable=True).indices  # candidates are in index order, so ties keep it
        chosen.append(candidates[mine[order[:want]]])
    return torch.cat(chosen).sort().values


def subset_indices(spec: int | str, dataset: Dataset, *, seed: int = 0, choose: Chooser | None = None) -> torch.Tensor:
    """Sorted indices of the class-balanced subset ``spec`` of ``dataset``.

    ``choose(kind, n)`` answers kinds other than ``random`` (the run's ``advcore_training_subset``).
    """
    if isinstance(spec, int):
        return class_balanced_subset(dataset, spec)
    kind, n = spec.split(":")
    if kind == "random":
        labels = dataset.labels.cpu()
        if int(n) > labels.numel():
            raise DataError(f"data.subset {spec}: the training set has only {labels.numel()} samples; lower N")
        rank = torch.rand(labels.numel(), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        return ranked_subset(spec, dataset, torch.arange(labels.numel()), rank)
    chosen = choose(kind, int(n)) if choose is not None else None
    if chosen is None:
        raise DataError(f"data.subset {spec}: no enabled plugin ranks '{kind}' subsets; enable the plugin that "
                        "provides it (advcore plugins lists them) or use N or random:N")
    return chosen
