"""Datasets held in memory as uint8 tensors, and deterministic batches with recorded augmentation.

Augmentation runs on the batch's device and returns its parameters (crop offsets, flips) so that
per-sample caches (e.g. a stored perturbation) can be mapped back into the padded frame.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import AdvcoreError

__all__ = ["DataError", "Dataset", "DatasetInfo", "Batch", "Augment", "Loader", "load_dataset", "read_idx",
           "class_balanced_subset", "held_out_indices", "make_eval_loader", "DATASETS"]


class DataError(AdvcoreError):
    """Data is missing, corrupt or inconsistent; the message names the fix."""


@dataclass
class Dataset:
    """One split in memory; uint8 keeps CIFAR-sized sets small, batches are converted on the fly."""

    images: torch.Tensor
    """uint8 [N, C, H, W] (float32 in [0, 1] for a user's dataset that is not 8-bit)."""
    labels: torch.Tensor
    """int64 [N]."""
    num_classes: int
    """Number of classes K."""
    name: str
    """The dataset's name (digits, fashion-mnist, cifar10, ...)."""

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    """The dataset's name."""
    num_classes: int
    """Number of classes K."""
    channels: int
    """Image channels C."""
    size: int
    """Image height and width."""
    default_eps: float
    """The Linf budget used when ``attack.eps`` is not set."""
    augment_crop_padding: int
    """Padding of the random crop (0: none)."""
    flip: bool
    """Whether training flips images horizontally."""


# name -> (num_classes, channels, size, default_eps, crop padding, flip); folder's are filled in on load
_INFO = {
    "digits": (10, 1, 8, 0.1, 1, False),
    "mnist": (10, 1, 28, 0.3, 2, False),
    "fashion-mnist": (10, 1, 28, 0.1, 2, True),
    "cifar10": (10, 3, 32, 8 / 255, 4, True),
    "cifar100": (100, 3, 32, 8 / 255, 4, True),
    "svhn": (10, 3, 32, 8 / 255, 0, False),
    "folder": (0, 3, 0, 8 / 255, 0, True),
}
DATASETS = tuple(_INFO)
_DEFAULT_DIRS = {"fashion-mnist": "/usr/share/datasets/fashion-mnist", "mnist": "/usr/share/datasets/mnist"}
_CACHE_DIR = "~/.cache/advcore/data"


def load_dataset(name: str, *, data_dir: str | None = None,
                 download: bool = False) -> tuple[Dataset, Dataset, DatasetInfo]:
    """Return (train, test, info) of a built-in dataset; every failure is a one-line DataError.

    A user's ``package.module:factory`` goes through ``advcore.data.user_data.load_dataset``.
    """
    if name not in _INFO:
        raise DataError(f"data.dataset: unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if name == "digits":
        parts = _load_digits()
    elif name in ("mnist", "fashion-mnist"):
        parts = _load_idx_dir(name, Path(data_dir or _DEFAULT_DIRS[name]))
    elif name == "folder":
        if not data_dir:
            raise DataError("folder: no data directory given; pass --data-dir DIR (with DIR/train and DIR/val)")
        parts = _load_folder(Path(data_dir))
    else:
        parts = _load_torchvision(name, os.path.expanduser(data_dir or _CACHE_DIR), download)
    (xtr, ytr), (xte, yte), num_classes = parts
    train, test = (Dataset(torch.as_tensor(x), torch.as_tensor(y, dtype=torch.int64), num_classes, name)
                   for x, y in ((xtr, ytr), (xte, yte)))
    for split, ds in (("train", train), ("test", test)):
        _validate(ds, split)
    if train.images.shape[1:] != test.images.shape[1:]:
        raise DataError(f"{name}: train images are {tuple(train.images.shape[1:])} but test images are "
                        f"{tuple(test.images.shape[1:])}; use splits with one image size")
    _, c, h, w = train.images.shape
    if h != w:
        raise DataError(f"{name}: images are {h}x{w}; only square images are supported, resize them")
    _, _, _, eps, pad, flip = _INFO[name]
    pad = h // 8 if name == "folder" else pad
    return train, test, DatasetInfo(name, num_classes, c, h, eps, pad, flip)


def _validate(ds: Dataset, split: str) -> None:
    where = f"{ds.name} ({split})"
    if len(ds) == 0:
        raise DataError(f"{where}: the split is empty; check the data directory")
    if ds.images.dtype != torch.uint8 or ds.images.dim() != 4 or ds.images.shape[0] != len(ds):
        raise DataError(f"{where}: expected uint8 images [N, C, H, W] for {len(ds)} labels, "
                        f"got {ds.images.dtype} {tuple(ds.images.shape)}; check the data files")
    lo, hi = int(ds.labels.min()), int(ds.labels.max())
    if lo < 0 or hi >= ds.num_classes:
        raise DataError(f"{where}: labels span [{lo}, {hi}] but there are {ds.num_classes} classes; check the label files")


def _load_digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[:, None]
    target = d.target.astype(np.int64)
    rs = np.random.RandomState(0)  # one stream, classes in order: the split never changes
    train, test = [], []
    for c in range(10):
        idx = rs.permutation(np.flatnonzero(target == c))
        n_test = int(round(0.2 * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    train, test = np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
    return (images[train], target[train]), (images[test], target[test]), 10


# --- IDX (MNIST, Fashion-MNIST) ---------------------------------------------------------------


def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """Parse an unsigned-byte IDX file (gzipped or not), checking magic, dims and length."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read ({exc}); re-download the file") from None
    if len(raw) < 4:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes); re-download the file")
    zero, dtype, nd = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08 or nd == 0:
        raise DataError(f"{path}: not an unsigned-byte IDX file (magic 0x{raw[:4].hex()}); re-download the file")
    if ndim is not None and nd != ndim:
        raise DataError(f"{path}: IDX file has {nd} dimensions, expected {ndim}; check the file names")
    if len(raw) < 4 + 4 * nd:
        raise DataError(f"{path}: truncated IDX header; re-download the file")
    dims = struct.unpack(f">{nd}I", raw[4:4 + 4 * nd])
    body = memoryview(raw)[4 + 4 * nd:]
    expected = int(np.prod(dims))
    if len(body) != expected:
        kind = "truncated" if len(body) < expected else "oversized"
        raise DataError(f"{path}: {kind} IDX file (dims {dims} need {expected} bytes, found {len(body)}); "
                        "re-download the file")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _find_idx(root: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (root / name).is_file():
            return root / name
    return None


def _load_idx_dir(name: str, root: Path):
    hint = ("install Debian's dataset-fashion-mnist or pass --data-dir DIR" if name == "fashion-mnist"
            else "put the MNIST IDX files there or pass --data-dir DIR")
    if not root.is_dir():
        raise DataError(f"{name}: data directory {root} does not exist; {hint}")
    splits = []
    for prefix in ("train", "t10k"):
        img_path, lbl_path = _find_idx(root, f"{prefix}-images-idx3-ubyte"), _find_idx(root, f"{prefix}-labels-idx1-ubyte")
        if img_path is None or lbl_path is None:
            missing = f"{prefix}-{'images-idx3' if img_path is None else 'labels-idx1'}-ubyte[.gz]"
            raise DataError(f"{name}: no IDX files under {root} (expected {missing}); {hint}")
        images, labels = read_idx(img_path, 3), read_idx(lbl_path, 1)
        if images.shape[0] != labels.shape[0]:
            raise DataError(f"{name}: {img_path.name} has {images.shape[0]} images but {lbl_path.name} has "
                            f"{labels.shape[0]} labels; re-download the files")
        splits.append((images[:, None].copy(), labels.astype(np.int64)))
    return splits[0], splits[1], 10


# --- torchvision (CIFAR, SVHN) -----------------------------------------------------------------


def _load_torchvision(name: str, root: str, download: bool):
    import torchvision.datasets as tvd

    fix = f"pass --set data.download=true or put the files under {root}"
    try:
        if name == "svhn":
            sets = [tvd.SVHN(root, split=s, download=download) for s in ("train", "test")]
            data = [(s.data, s.labels) for s in sets]
        else:
            cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
            sets = [cls(root, train=t, download=download) for t in (True, False)]
            data = [(s.data.transpose(0, 3, 1, 2), s.targets) for s in sets]  # HWC -> CHW
    except ImportError as exc:
        raise DataError(f"{name}: missing dependency ({exc}); pip install scipy") from None
    except Exception as exc:  # torchvision's own RuntimeError suggests download=True: not our spelling
        detail = "" if isinstance(exc, RuntimeError) else f" ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0]})"
        raise DataError(f"{name}: dataset files missing or corrupted under {root}{detail}; {fix}") from None
    (xtr, ytr), (xte, yte) = ((np.ascontiguousarray(x, dtype=np.uint8), np.asarray(y, dtype=np.int64)) for x, y in data)
    return (xtr, ytr), (xte, yte), _INFO[name][0]


# --- image folders (Tiny-ImageNet) ------------------------------------------------------------

_EXTS = (".jpeg", ".jpg", ".png", ".bmp", ".webp")


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in _EXTS and p.is_file())


def _load_folder(root: Path):
    train_dir, val_dir = root / "train", root / "val"
    if not train_dir.is_dir() or not val_dir.is_dir():
        raise DataError(f"folder: expected {train_dir} and {val_dir} (one sub-folder per class); "
                        "pass --data-dir DIR with that layout")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"folder: no class folders under {train_dir}; put images in train/<class>/")
    index = {c: i for i, c in enumerate(classes)}
    train = [(p, index[c]) for c in classes for p in _images_under(train_dir / c)]
    annotations = val_dir / "val_annotations.txt"
    if annotations.is_file():  # Tiny-ImageNet: val/images/*.JPEG listed with their wnid
        val = []
        for line_no, line in enumerate(annotations.read_text().splitlines(), 1):
            fields = line.split("\t")
            if not line.strip():
                continue
            if len(fields) < 2 or fields[1] not in index:
                raise DataError(f"folder: {annotations} line {line_no}: unknown or missing class "
                                f"{fields[1] if len(fields) > 1 else ''!r}; it must name a train/ folder")
            val.append((val_dir / "images" / fields[0], index[fields[1]]))
    else:
        val = []
        for sub in sorted(p for p in val_dir.iterdir() if p.is_dir()):
            if sub.name not in index:
                raise DataError(f"folder: {sub} has no matching class in {train_dir}; rename or remove it")
            val += [(p, index[sub.name]) for p in _images_under(sub)]
    return _read_images(train), _read_images(val), len(classes)


def _read_one(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise DataError(f"folder: cannot read image {path} ({exc}); remove or replace it") from None


def _read_images(items: list[tuple[Path, int]]):
    if not items:
        return np.zeros((0, 3, 1, 1), np.uint8), np.zeros(0, np.int64)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # PIL decodes without the GIL
        arrays = list(pool.map(_read_one, [p for p, _ in items]))
    shape = arrays[0].shape
    for (path, _), a in zip(items, arrays):
        if a.shape != shape:
            raise DataError(f"folder: {path} is {a.shape[1]}x{a.shape[0]} but {items[0][0]} is "
                            f"{shape[1]}x{shape[0]}; resize all images to one size")
    return np.stack(arrays).transpose(0, 3, 1, 2).copy(), np.array([y for _, y in items], np.int64)


# --- subsets ----------------------------------------------------------------------------------


def class_balanced_subset(ds: Dataset, n: int) -> torch.Tensor:
    """The earliest samples, taken round-robin over classes, so small runs see every class."""
    if n > len(ds) or n < 0:
        raise DataError(f"data.subset: {n} samples requested but {ds.name} has {len(ds)}; lower data.subset")
    labels = ds.labels.cpu()
    rank = torch.empty_like(labels)
    for c in labels.unique():
        pos = (labels == c).nonzero().squeeze(1)
        rank[pos] = torch.arange(pos.numel())
    order = torch.argsort(rank * ds.num_classes + labels, stable=True)
    return order[:n].sort().values


def held_out_indices(n_total: int, n: int, seed: int) -> torch.Tensor:
    """A fixed random evaluation subset (sorted), the same for every run with this seed."""
    if not 0 <= n <= n_total:
        raise DataError(f"eval.n: {n} samples requested but the test split has {n_total}; lower eval.n")
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n].sort().values


# --- augmentation -----------------------------------------------------------------------------


class Augment:
    """Random crop from a padded frame plus horizontal flip, with parameters returned so it can be inverted.

    ``fill`` is the border: a constant (0 as torchvision and the RAAT code; 0.5 grey as the ATTA
    and hard-instances CIFAR code) or "reflect" (the AWP / Rice et al. code). Reproductions differ by it.
    """

    def __init__(self, padding: int, flip: bool, fill: float | str = 0.0):
        self.padding, self.flip = int(padding), bool(flip)
        self.fill = fill if fill == "reflect" else float(fill)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        crop = torch.randint(0, 2 * self.padding + 1, (n, 2), generator=generator) if self.padding else None
        flip = torch.rand(n, generator=generator) < 0.5 if self.flip else None
        return crop, flip

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        p = self.padding
        if not p:
            return x
        if self.fill == "reflect":
            return F.pad(x, (p, p, p, p), mode="reflect")
        return F.pad(x, (p, p, p, p), value=self.fill)

    def _window(self, frame: torch.Tensor, crop: torch.Tensor):
        """Advanced-index tuple selecting each sample's HxW window, as [B, H, W, C]."""
        b, _, hp, wp = frame.shape
        h, w = hp - 2 * self.padding, wp - 2 * self.padding
        crop = crop.to(frame.device)
        rows = crop[:, 0, None] + torch.arange(h, device=frame.device)
        cols = crop[:, 1, None] + torch.arange(w, device=frame.device)
        return torch.arange(b, device=frame.device)[:, None, None], slice(None), rows[:, :, None], cols[:, None, :]

    @staticmethod
    def _flip(x: torch.Tensor, flip: torch.Tensor | None) -> torch.Tensor:
        if flip is None:
            return x
        return torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)

    def from_frame(self, frame: torch.Tensor, crop: torch.Tensor | None, flip: torch.Tensor | None) -> torch.Tensor:
        out = frame if crop is None else frame[self._window(frame, crop)].permute(0, 3, 1, 2)
        return self._flip(out, flip).contiguous()

    def apply(self, x: torch.Tensor, crop: torch.Tensor | None, flip: torch.Tensor | None) -> torch.Tensor:
        return self.from_frame(self.pad(x) if crop is not None else x, crop, flip)

    def to_frame(self, patch: torch.Tensor, frame: torch.Tensor, crop: torch.Tensor | None,
                 flip: torch.Tensor | None) -> torch.Tensor:
        patch = self._flip(patch, flip)  # a flip is its own inverse
        out = frame.clone()
        if crop is None:
            out.copy_(patch)
        else:
            out[self._window(out, crop)] = patch.permute(0, 2, 3, 1).to(out.dtype)
        return out


# --- batches ----------------------------------------------------------------------------------


@dataclass
class Batch:
    x: torch.Tensor
    """float32 [B, C, H, W] in [0, 1], augmented, on the device."""
    y: torch.Tensor
    """Labels [B]."""
    index: torch.Tensor
    """Positions in the full training Dataset [B] (the keys of per-sample state)."""
    crop: torch.Tensor | None = None
    """Crop offsets [B, 2] in the padded frame, or None (not augmented)."""
    flip: torch.Tensor | None = None
    """Horizontal flips [B], or None."""
    views: list["Batch"] = field(default_factory=list)
    """Further augmented views of the same samples (when plugins ask for several)."""


def _batch_seed(seed: int, epoch: int, batch_no: int) -> int:
    digest = hashlib.blake2b(f"{seed}:{epoch}:{batch_no}:aug".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class Loader:
    """Deterministic epoch iterator: the order and the augmentation of epoch e depend only on (seed, epoch).

    With world_size > 1 each global batch (batch_size * world_size consecutive permuted indices) is
    cut into world_size contiguous chunks and rank r takes chunk r, so the ranks together see exactly
    the batches (and augmentations) of a single-rank run with batch_size * world_size. A last partial
    global batch smaller than world_size is dropped so every rank takes the same number of steps.
    """

    def __init__(self, dataset: Dataset, *, batch_size: int, seed: int, augment: Augment | None,
                 device: torch.device | str = "cpu", indices: torch.Tensor | None = None, views: int = 1,
                 shuffle: bool = True, drop_last: bool = False, rank: int = 0, world_size: int = 1):
        if batch_size < 1 or views < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad loader settings: batch_size={batch_size}, views={views}, rank={rank}/{world_size}")
        self.dataset, self.batch_size, self.seed, self.augment = dataset, batch_size, seed, augment
        self.device, self.views, self.shuffle, self.drop_last = torch.device(device), views, shuffle, drop_last
        self.rank, self.world_size = rank, world_size
        self.indices = torch.arange(len(dataset)) if indices is None else torch.as_tensor(indices, dtype=torch.int64).cpu()

    def __len__(self) -> int:
        n, g = self.indices.numel(), self.batch_size * self.world_size
        full, rest = divmod(n, g)
        return full + (1 if rest and not self.drop_last and rest >= self.world_size else 0)

    def __iter__(self) -> Iterator[Batch]:
        return self.epoch(0)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        order = self.indices
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 1000003 + epoch)
            order = order[torch.randperm(order.numel(), generator=gen)]
        g = self.batch_size * self.world_size
        for batch_no in range(start_batch, len(self)):
            yield self._make(order[batch_no * g:(batch_no + 1) * g], epoch, batch_no)

    def _rank_share(self, n: int) -> slice:
        """This rank's contiguous part of a global batch of ``n`` (``torch.tensor_split``'s cut:
        the first ``n % world_size`` parts one longer), computed without a tensor op."""
        q, r = divmod(n, self.world_size)
        lo = self.rank * q + min(self.rank, r)
        return slice(lo, lo + q + (self.rank < r))

    def _make(self, chunk: torch.Tensor, epoch: int, batch_no: int) -> Batch:
        """The batch of ``chunk`` (a global batch's indices); a step pays for each tensor op made
        here, so a single process without augmentation takes the fewest."""
        sel = self._rank_share(chunk.numel())
        index = chunk if self.world_size == 1 else chunk[sel]
        images, labels = self.dataset.images, self.dataset.labels
        raw = images[index.to(images.device)].to(self.device, non_blocking=True)
        x = raw.float().div_(255) if raw.dtype == torch.uint8 else raw.float()  # user data may be float in [0, 1]
        y = labels[index.to(labels.device)].to(self.device, non_blocking=True)
        index = index.to(self.device)  # once for every view
        gen = None if self.augment is None else torch.Generator().manual_seed(_batch_seed(self.seed, epoch, batch_no))
        out = []
        for _ in range(self.views):  # params drawn for the whole global batch: identical across world sizes
            crop = flip = None
            if self.augment is not None:
                crop, flip = self.augment.sample(chunk.numel(), gen)
                crop = None if crop is None else crop[sel].to(self.device)
                flip = None if flip is None else flip[sel].to(self.device)
            xv = self.augment.apply(x, crop, flip) if self.augment is not None else x
            out.append(Batch(xv, y, index, crop, flip))
        out[0].views = out[1:]
        return out[0]


def make_eval_loader(dataset: Dataset, batch_size: int, device: torch.device | str = "cpu",
                     indices: torch.Tensor | None = None) -> Loader:
    """In-order batches without augmentation; iterate it directly."""
    return Loader(dataset, batch_size=batch_size, seed=0, augment=None, device=device, indices=indices, shuffle=False)
