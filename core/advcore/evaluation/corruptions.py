"""Accuracy on common corruptions stored the CIFAR-10-C way (Hendrycks & Dietterich, 2019).

A folder holds ``labels.npy`` and one ``<corruption>.npy`` per corruption: uint8 images
[5 * M, H, W, C], severities 1..5 stacked in blocks of M (CIFAR-10-C: M = 10000). Files are
memory-mapped and read with ``allow_pickle=False``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..attacks import model_mode
from ..data.datasets import DataError
from .eval_attacks import predict, progress_bar

__all__ = ["SEVERITIES", "evaluate_corruptions"]

SEVERITIES = 5


def _load(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read ({exc}); re-download the corruption files") from None


def evaluate_corruptions(model: torch.nn.Module, folder: str | Path, *, n: int | None = None,
                         batch_size: int = 256, progress: bool = True) -> dict[str, Any]:
    """{corruption: {"1".."5": acc, "mean": acc}, ..., "mean_acc": mean over corruptions and severities}.

    ``n`` evaluates the first n images of every severity block.
    """
    folder = Path(folder)
    labels_path = folder / "labels.npy"
    if not labels_path.is_file():
        raise DataError(f"corruptions: {labels_path} not found; pass the CIFAR-10-C style folder "
                        f"(labels.npy and <corruption>.npy files)")
    files = sorted(p for p in folder.glob("*.npy") if p.name != "labels.npy")
    if not files:
        raise DataError(f"corruptions: no <corruption>.npy files in {folder}")
    labels = _load(labels_path)
    device = next(model.parameters()).device
    out: dict[str, Any] = {}
    with model_mode(model, "eval"):
        for path in progress_bar(files, len(files), "corruptions", progress):
            images = _load(path)
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] % SEVERITIES:
                raise DataError(f"{path}: expected uint8 images [5*M, H, W, C], got {images.dtype} "
                                f"{tuple(images.shape)}; check the file")
            block = images.shape[0] // SEVERITIES
            if labels.shape[0] not in (block, images.shape[0]):
                raise DataError(f"{path}: {images.shape[0]} images but labels.npy has {labels.shape[0]} labels "
                                f"(want {images.shape[0]} or {block}); use the labels of this set")
            take = block if n is None else min(n, block)
            scores = {}
            for s in range(SEVERITIES):
                rows = slice(s * block, s * block + take)
                x = torch.from_numpy(np.array(images[rows])).permute(0, 3, 1, 2).float().div(255)
                y = torch.from_numpy(np.asarray(labels[rows] if labels.shape[0] == images.shape[0]
                                                else labels[:take]).astype(np.int64))
                try:
                    pred = predict(model, x.to(device), batch_size).cpu()
                except RuntimeError as exc:
                    raise DataError(f"{path}: images of shape {tuple(x.shape[1:])} do not fit the model "
                                    f"({str(exc).splitlines()[0]}); use corruptions of the model's dataset") from None
                scores[str(s + 1)] = (pred == y).float().mean().item()
            scores["mean"] = sum(scores.values()) / SEVERITIES
            out[path.stem] = scores
    out["mean_acc"] = sum(v["mean"] for v in out.values()) / len(files)
    return out
