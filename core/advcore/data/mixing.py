"""Extra training data mixed into every batch at a fixed share: a method-free data mechanism.

Robust self-training on pseudo-labelled data (Carmon et al. 2019) and fine-tuning with extra
data (Liu et al., hard adversarial instances, Sec. 6.2; HAT Sec. 5.3) all use it, with any
objective; it is configured by ``data.extra`` alone and needs no plugin.

``data.extra`` names an ``.npz`` with ``images`` (uint8 NHWC or NCHW, or float in [0, 1]) and
``labels`` (pseudo-labels). The run's training set becomes the original samples followed by the
extra ones, so extra sample j has dataset index N_train + j and per-sample state stays keyed
uniquely. ``data.extra_fraction`` f (default 0.5, half and half) is the share of extra samples
in each global batch of G: floor(f * G) extra, the rest training samples (HAT Sec. 5.3 follows
Gowal et al. with 70%). An epoch is one pass over the source that needs the most batches; the
other one is cycled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import math

import numpy as np
import torch

from .datasets import Batch, DataError, Dataset, DatasetInfo, Loader

__all__ = ["load_extra", "combine", "MixedLoader"]


def _as_nchw_uint8(images: np.ndarray, info: DatasetInfo, path: Path) -> np.ndarray:
    c, s = info.channels, info.size
    if images.ndim == 3 and c == 1:
        images = images[:, None]
    if images.ndim != 4:
        raise DataError(f"{path}: images have shape {images.shape}; expected [N, {c}, {s}, {s}] or [N, {s}, {s}, {c}]")
    if images.shape[1:] == (c, s, s):
        pass
    elif images.shape[1:] == (s, s, c):
        images = images.transpose(0, 3, 1, 2)
    else:
        raise DataError(f"{path}: images have shape {images.shape}; expected [N, {c}, {s}, {s}] or [N, {s}, {s}, {c}] "
                        f"to match {info.name}")
    if images.dtype == np.uint8:
        return np.ascontiguousarray(images)
    if not np.issubdtype(images.dtype, np.floating):
        raise DataError(f"{path}: images are {images.dtype}; store uint8 in [0, 255] or floats in [0, 1]")
    if not np.isfinite(images).all():  # NaN would pass the range check below and cast to 0
        raise DataError(f"{path}: images hold NaN or infinite values; replace them or drop those images")
    lo, hi = float(images.min(initial=0.0)), float(images.max(initial=0.0))
    if lo < 0 or hi > 1:
        raise DataError(f"{path}: float images span [{lo:.3g}, {hi:.3g}]; scale them to [0, 1] or store uint8")
    return np.ascontiguousarray(np.round(images * 255).astype(np.uint8))


def load_extra(path: str | Path, info: DatasetInfo) -> Dataset:
    """The extra set as a Dataset shaped like the training images; every problem is a one-line DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data.extra: {path} does not exist; pass an .npz with 'images' and 'labels'")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ("images", "labels") if k not in f.files]
            if missing:
                raise DataError(f"data.extra: {path} has arrays {sorted(f.files)} but no {' and '.join(missing)}; "
                                "save it with np.savez(path, images=..., labels=...)")
            images, labels = f["images"], f["labels"]
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - zip/pickle/format errors are the user's file
        raise DataError(f"data.extra: {path} is not a readable .npz ({type(exc).__name__}); write it with np.savez") from None
    images = _as_nchw_uint8(images, info, path)
    labels = np.asarray(labels).reshape(-1)
    if not np.issubdtype(labels.dtype, np.integer) or labels.shape[0] != images.shape[0]:
        raise DataError(f"data.extra: {path} needs one integer label per image ({images.shape[0]} images, "
                        f"labels {labels.dtype} {labels.shape})")
    if labels.size and (labels.min() < 0 or labels.max() >= info.num_classes):
        raise DataError(f"data.extra: labels in {path} span [{labels.min()}, {labels.max()}] but "
                        f"{info.name} has {info.num_classes} classes")
    if images.shape[0] == 0:
        raise DataError(f"data.extra: {path} holds no images; drop data.extra or fill the file")
    return Dataset(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)), info.num_classes, f"{info.name}+extra")


def combine(train: Dataset, extra: Dataset) -> Dataset:
    """Training samples first, then the extra ones (index N_train + j)."""
    return Dataset(torch.cat([train.images, extra.images.to(train.images.device)]),
                   torch.cat([train.labels, extra.labels.to(train.labels.device)]), train.num_classes, train.name)


class MixedLoader(Loader):
    """Every global batch of G: G - floor(f*G) training samples and floor(f*G) extra samples, interleaved.

    Interleaving (each source spread evenly over the batch; at f = 0.5 training rows on the even
    slots, extra rows on the odd ones) keeps the share inside each rank's contiguous part under
    DDP. Order and augmentation depend only on (seed, epoch), as for ``Loader``.
    """

    def __init__(self, dataset: Dataset, *, extra_indices: torch.Tensor, extra_fraction: float = 0.5, **kwargs):
        super().__init__(dataset, **kwargs)
        self.extra_fraction = float(extra_fraction)
        if not 0 < self.extra_fraction < 1:
            raise DataError(f"data.extra_fraction={extra_fraction:g} must lie strictly between 0 and 1 "
                            "(the share of extra samples in each batch)")
        g = self.batch_size * self.world_size
        a, b = self._shares()
        if a < 1 or b < 1:
            raise DataError(f"data.extra_fraction={self.extra_fraction:g} of a global batch of {g} leaves "
                            f"{a} training and {b} extra samples per batch; raise data.batch_size or move the "
                            "fraction towards 0.5")
        self.extra_indices = torch.as_tensor(extra_indices, dtype=torch.int64).cpu()

    def _shares(self) -> tuple[int, int]:
        """(training rows, extra rows) of one global batch; the 1e-9 keeps 0.29 * 100 at 29, not 28.99..."""
        g = self.batch_size * self.world_size
        b = math.floor(self.extra_fraction * g + 1e-9)
        return g - b, b

    def __len__(self) -> int:
        a, b = self._shares()
        return max(-(-self.indices.numel() // a), -(-self.extra_indices.numel() // b))

    def _stream(self, pool: torch.Tensor, need: int, epoch: int, tag: int) -> torch.Tensor:
        parts, k = [], 0
        while sum(p.numel() for p in parts) < need:
            gen = torch.Generator().manual_seed((self.seed * 1000003 + epoch) * 7 + tag + 1009 * k)
            parts.append(pool[torch.randperm(pool.numel(), generator=gen)] if self.shuffle else pool)
            k += 1
        return torch.cat(parts)[:need]

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        a, b = self._shares()
        n = len(self)
        train, extra = self._stream(self.indices, n * a, epoch, 0), self._stream(self.extra_indices, n * b, epoch, 1)
        # row i of a source of n rows sits at (2i + 1) / 2n of the batch: compare (2i+1)*b with (2j+1)*a in
        # integers, ties to the training row (at a = b: train, extra, train, ...; the half-and-half order)
        key = torch.cat([(2 * torch.arange(a) + 1) * b, (2 * torch.arange(b) + 1) * a])
        order = torch.argsort(key, stable=True)
        for batch_no in range(start_batch, n):
            chunk = torch.cat([train[batch_no * a:(batch_no + 1) * a], extra[batch_no * b:(batch_no + 1) * b]])
            yield self._make(chunk[order], epoch, batch_no)


def training_data(config, train_set: Dataset, info: DatasetInfo, choose=None
                  ) -> tuple[Dataset, torch.Tensor | None, torch.Tensor | None]:
    """(training set, indices to train on, extra indices or None) from data.subset and data.extra.

    The subset (first N, random:N, or a plugin's KIND:N answered by ``choose(kind, n)``, see
    ``advcore.data.subsets``) is drawn from the original samples only; with ``data.extra`` the
    returned set is the combined one.
    """
    from .subsets import subset_indices

    d = config.data
    indices = None
    if d.subset is not None:
        indices = subset_indices(d.subset, train_set, seed=config.seed, choose=choose)
    if not d.extra:
        return train_set, indices, None
    extra = load_extra(d.extra, info)
    n_train = len(train_set)
    indices = torch.arange(n_train) if indices is None else indices
    return combine(train_set, extra), indices, n_train + torch.arange(len(extra))
