"""A user's ``torch.utils.data.Dataset`` as an advcore split held in memory.

Contract (docs/python-api.md): map-style (``len`` and ``ds[i]``), ``ds[i]`` is ``(image,
label)`` with the image a tensor [C, H, W] in [0, 1] (uint8 in [0, 255] is accepted) and an
integer label, and ``ds[i]`` is the same sample every time it is read. Per-sample state
(caches, reweighting, per-sample budgets) is keyed by the index, so random transforms inside
the dataset are refused: advcore augments batches itself (crop and flip, ``data.augment``).
Images that are exact multiples of 1/255 are stored as uint8, others as float32.
"""

from __future__ import annotations

from typing import Any

import torch

from . import datasets as data
from .datasets import DataError, Dataset, DatasetInfo
from ..factories import is_factory, load_factory

__all__ = ["load_user_dataset", "from_torch_dataset", "USER_DEFAULT_EPS"]

USER_DEFAULT_EPS = 8 / 255


def _sample(ds: Any, i: int, where: str) -> tuple[torch.Tensor, int]:
    try:
        item = ds[i]
    except Exception as exc:  # noqa: BLE001 - the user's __getitem__ may raise anything
        raise DataError(f"{where}: reading sample {i} failed ({type(exc).__name__}: {exc})") from None
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise DataError(f"{where}: dataset[{i}] must be (image, label), got {type(item).__name__}")
    image, label = item[0], item[1]
    if not isinstance(image, torch.Tensor):
        raise DataError(f"{where}: dataset[{i}] image is a {type(image).__name__}, not a tensor [C, H, W]; "
                        f"add transform=torchvision.transforms.ToTensor() (or v2.ToImage + ToDtype)")
    if image.dim() != 3:
        raise DataError(f"{where}: dataset[{i}] image has shape {tuple(image.shape)}; expected [C, H, W]")
    if isinstance(label, torch.Tensor):
        if label.numel() != 1 or label.dtype.is_floating_point:
            raise DataError(f"{where}: dataset[{i}] label must be one integer class, got {label.dtype} "
                            f"{tuple(label.shape)}")
        label = int(label.item())
    if not isinstance(label, int):
        raise DataError(f"{where}: dataset[{i}] label must be an integer class, got {type(label).__name__}")
    return image, label


def _check_stable(ds: Any, images: torch.Tensor, labels: torch.Tensor, where: str) -> None:
    """Read a few samples again: per-sample state needs ds[i] to be the same sample every time."""
    n = len(labels)
    for i in sorted({0, n // 2, n - 1}):
        image, label = _sample(ds, i, where)
        if label != int(labels[i]) or not torch.equal(_as_stored(image, images.dtype), images[i]):
            raise DataError(f"{where}: dataset[{i}] returned a different sample on a second read; per-sample "
                            f"state needs stable indices, so remove random transforms from the dataset "
                            f"(advcore crops and flips batches itself, data.augment)")


def _as_stored(image: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if image.dtype == torch.uint8:
        return image if dtype == torch.uint8 else image.float() / 255
    image = image.float()
    return torch.round(image * 255).to(torch.uint8) if dtype == torch.uint8 else image


def from_torch_dataset(ds: Any, name: str, split: str) -> Dataset:
    """Read every sample of ``ds`` once, check the contract, and keep the split in memory."""
    where = f"{name} ({split})"
    if not hasattr(ds, "__len__") or not hasattr(ds, "__getitem__"):
        raise DataError(f"{where}: {type(ds).__name__} is not a map-style dataset (needs __len__ and "
                        f"__getitem__); wrap an iterable dataset's samples in a TensorDataset")
    n = len(ds)
    if n == 0:
        raise DataError(f"{where}: the dataset is empty")
    if isinstance(ds, torch.utils.data.TensorDataset) and len(ds.tensors) >= 2:
        raw, raw_labels = ds.tensors[0], ds.tensors[1]
        if raw.dim() != 4 or raw_labels.dim() != 1 or raw_labels.dtype.is_floating_point:
            raise DataError(f"{where}: a TensorDataset needs images [N, C, H, W] and integer labels [N], got "
                            f"{tuple(raw.shape)} and {raw_labels.dtype} {tuple(raw_labels.shape)}")
        images, labels = raw, raw_labels.long()
    else:
        first = _sample(ds, 0, where)[0]
        images = torch.empty((n, *first.shape), dtype=torch.uint8 if first.dtype == torch.uint8 else torch.float32)
        labels = torch.empty(n, dtype=torch.int64)
        for i in range(n):
            image, labels[i] = _sample(ds, i, where)
            if image.shape != first.shape:
                raise DataError(f"{where}: dataset[{i}] image is {tuple(image.shape)} but dataset[0] is "
                                f"{tuple(first.shape)}; all images need one size")
            images[i] = image
    if images.dtype != torch.uint8:
        images = images.detach().float().cpu()
        lo, hi = images.min().item(), images.max().item()
        if lo < 0 or hi > 1:
            raise DataError(f"{where}: images span [{lo:.3g}, {hi:.3g}]; advcore expects inputs in [0, 1] "
                            f"(normalise inside the model, not in the dataset)")
        scaled = images * 255
        if torch.equal(scaled, torch.round(scaled)):
            images = scaled.round().to(torch.uint8)  # 8-bit data: a quarter of the memory, the same values
    labels = labels.cpu()
    if labels.min() < 0:
        raise DataError(f"{where}: labels must be classes 0..K-1, found {int(labels.min())}")
    _check_stable(ds, images, labels, where)
    return Dataset(images.contiguous(), labels, int(labels.max()) + 1, name)


def load_user_dataset(text: str) -> tuple[Dataset, Dataset, DatasetInfo]:
    """``factory(train=True)`` and ``factory(train=False)`` as (train, test, info)."""
    factory = load_factory(text, "data.dataset")
    parts = []
    for train in (True, False):
        split = "train" if train else "test"
        try:
            ds = factory(train=train)
        except Exception as exc:  # noqa: BLE001 - the user's factory may raise anything
            raise DataError(f"data.dataset: {text}(train={train}) failed ({type(exc).__name__}: {exc})") from None
        parts.append(from_torch_dataset(ds, text, split))
    train_set, test_set = parts
    if train_set.images.shape[1:] != test_set.images.shape[1:]:
        raise DataError(f"{text}: train images are {tuple(train_set.images.shape[1:])} but test images are "
                        f"{tuple(test_set.images.shape[1:])}; use splits with one image size")
    classes = max(train_set.num_classes, test_set.num_classes)
    for ds in parts:
        ds.num_classes = classes
    _, c, h, w = train_set.images.shape
    return train_set, test_set, DatasetInfo(text, classes, c, h, USER_DEFAULT_EPS, h // 8, True)


def load_dataset(name: str, *, data_dir: str | None = None,
                 download: bool = False) -> tuple[Dataset, Dataset, DatasetInfo]:
    """(train, test, info) of ``data.dataset``: a built-in name or a user's ``package.module:factory``."""
    if is_factory(name):
        return load_user_dataset(name)
    return data.load_dataset(name, data_dir=data_dir, download=download)
