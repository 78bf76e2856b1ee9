"""Dataset loading (real on-disk formats), augmentation inversion, and loader determinism."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from advcore.data.datasets import (Augment, DataError, Dataset, Loader, class_balanced_subset, held_out_indices,
                          load_dataset, make_eval_loader, read_idx)

FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


# --- digits ---------------------------------------------------------------------------------


def test_digits_shapes_range_and_split(digits):
    train, test, info = digits
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (1, 8, 8)
    assert len(train) + len(test) == 1797 and abs(len(test) - 360) <= 5
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    assert set(train.labels.tolist()) == set(range(10)) == set(test.labels.tolist())
    assert (info.num_classes, info.channels, info.size, info.default_eps) == (10, 1, 8, 0.1)
    assert info.augment_crop_padding == 1 and not info.flip
    again, again_test, _ = load_dataset("digits")
    assert torch.equal(again.images, train.images) and torch.equal(again_test.labels, test.labels)
    counts = torch.bincount(test.labels, minlength=10)  # stratified
    assert counts.min() >= 34 and counts.max() <= 37


def test_class_balanced_subset(digits):
    train = digits[0]
    idx = class_balanced_subset(train, 25)
    assert idx.dtype == torch.int64 and torch.equal(idx, idx.sort().values) and len(idx.unique()) == 25
    counts = torch.bincount(train.labels[idx], minlength=10)
    assert counts.max() - counts.min() <= 1
    for c in range(10):  # earliest samples of each class
        first = (train.labels == c).nonzero().squeeze(1)[: int(counts[c])]
        assert set(first.tolist()) <= set(idx.tolist())
    assert torch.equal(class_balanced_subset(train, 25), idx)
    assert torch.equal(class_balanced_subset(train, len(train)), torch.arange(len(train)))
    with pytest.raises(DataError):
        class_balanced_subset(train, len(train) + 1)


def test_held_out_indices():
    a = held_out_indices(100, 10, seed=3)
    assert torch.equal(a, held_out_indices(100, 10, seed=3)) and torch.equal(a, a.sort().values)
    assert len(a.unique()) == 10 and not torch.equal(a, held_out_indices(100, 10, seed=4))


def test_unknown_dataset():
    with pytest.raises(DataError, match="choose one of: .*cifar10"):
        load_dataset("imagenet-22k")


# --- IDX --------------------------------------------------------------------------------------


def _idx_bytes(array: np.ndarray) -> bytes:
    return struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _write_idx(root: Path, n_train=12, n_test=5, gz=True, size=28):
    rng = np.random.RandomState(0)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.randint(0, 256, (n, size, size)).astype(np.uint8)
        lbls = (np.arange(n) % 10).astype(np.uint8)
        for kind, arr in (("images-idx3", imgs), ("labels-idx1", lbls)):
            path = root / f"{prefix}-{kind}-ubyte{'.gz' if gz else ''}"
            path.write_bytes(gzip.compress(_idx_bytes(arr)) if gz else _idx_bytes(arr))
        out[prefix] = (imgs, lbls)
    return out


@pytest.mark.parametrize("gz", [True, False])
def test_idx_parse_and_load(tmp_path, gz):
    arrays = _write_idx(tmp_path, gz=gz)
    suffix = ".gz" if gz else ""
    parsed = read_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", 3)
    assert np.array_equal(parsed, arrays["train"][0])
    train, test, info = load_dataset("fashion-mnist", data_dir=str(tmp_path))
    assert len(train) == 12 and len(test) == 5 and train.images.shape[1:] == (1, 28, 28)
    assert np.array_equal(test.images[:, 0].numpy(), arrays["t10k"][0])
    assert test.labels.tolist() == arrays["t10k"][1].tolist()
    assert info.flip and info.augment_crop_padding == 2
    _, _, minfo = load_dataset("mnist", data_dir=str(tmp_path))
    assert minfo.default_eps == 0.3 and not minfo.flip


def test_idx_truncated_and_bad_magic(tmp_path):
    _write_idx(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DataError, match="train-images-idx3-ubyte: truncated") as err:
        load_dataset("fashion-mnist", data_dir=str(tmp_path))
    assert "\n" not in str(err.value)
    path.write_bytes(b"\x00\x00\x0d\x03" + b"\x00" * 20)
    with pytest.raises(DataError, match="not an unsigned-byte IDX"):
        read_idx(path)
    gz = tmp_path / "broken.gz"
    gz.write_bytes(gzip.compress(b"x" * 1000)[:30])
    with pytest.raises(DataError, match="broken.gz"):
        read_idx(gz)


def test_idx_label_errors(tmp_path):
    _write_idx(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.full(5, 12, np.uint8)))
    with pytest.raises(DataError, match="labels span"):
        load_dataset("mnist", data_dir=str(tmp_path))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(DataError, match="5 images but .* 4 labels"):
        load_dataset("mnist", data_dir=str(tmp_path))


def test_idx_missing_dir(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("fashion-mnist", data_dir=str(tmp_path / "nope"))
    msg = str(err.value)
    assert "\n" not in msg and "does not exist" in msg and "--data-dir" in msg
    with pytest.raises(DataError, match="no IDX files under .*train-images-idx3-ubyte"):
        load_dataset("fashion-mnist", data_dir=str(tmp_path))


@pytest.mark.skipif(not FMNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    train, test, info = load_dataset("fashion-mnist")
    assert (len(train), len(test)) == (60000, 10000)
    assert train.images.shape[1:] == (1, 28, 28) and info.size == 28
    assert torch.bincount(train.labels).tolist() == [6000] * 10


# --- torchvision formats ----------------------------------------------------------------------


def _pickle(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def test_cifar10_real_format(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.RandomState(1)
    expected = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.randint(0, 256, (4, 3072)).astype(np.uint8)
        labels = rng.randint(0, 10, 4).tolist()
        _pickle(base / name, {"batch_label": name, "labels": labels, "data": data, "filenames": ["x.png"] * 4})
        expected[name] = (data, labels)
    _pickle(base / "batches.meta", {"label_names": [f"c{i}" for i in range(10)], "num_vis": 3072})
    with pytest.raises(DataError, match=r"pass --set data.download=true or put the files under"):
        load_dataset("cifar10", data_dir=str(tmp_path))  # md5 sums do not match the real files
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    train, test, info = load_dataset("cifar10", data_dir=str(tmp_path))
    assert len(train) == 20 and len(test) == 4 and train.images.shape[1:] == (3, 32, 32)
    data, labels = expected["test_batch"]
    assert torch.equal(test.images, torch.from_numpy(data.reshape(-1, 3, 32, 32)))
    assert test.labels.tolist() == labels
    assert info.augment_crop_padding == 4 and info.flip and abs(info.default_eps - 8 / 255) < 1e-12


def test_svhn_real_format(tmp_path, monkeypatch):
    sio = pytest.importorskip("scipy.io")
    import torchvision.datasets.svhn as tv_svhn

    rng = np.random.RandomState(2)
    x = rng.randint(0, 256, (32, 32, 3, 6)).astype(np.uint8)  # the .mat layout is H, W, C, N
    y = np.array([[10], [1], [2], [3], [10], [9]], dtype=np.uint8)  # digit 0 is stored as 10
    for split in ("train", "test"):
        sio.savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": y})
    monkeypatch.setattr(tv_svhn, "check_integrity", lambda *a, **k: True)
    train, test, info = load_dataset("svhn", data_dir=str(tmp_path))
    assert train.labels.tolist() == [0, 1, 2, 3, 0, 9] and train.images.shape == (6, 3, 32, 32)
    assert torch.equal(train.images[2], torch.from_numpy(x[..., 2].transpose(2, 0, 1).copy()))
    assert info.augment_crop_padding == 0 and not info.flip


def test_cifar_missing(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("cifar100", data_dir=str(tmp_path))
    assert "\n" not in str(err.value) and str(tmp_path) in str(err.value)


# --- folders ----------------------------------------------------------------------------------


def _png(path: Path, value: int, size=16, mode="RGB"):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size, size), value if mode == "L" else (value, 0, 255 - value)).save(path)


def test_folder_imagefolder_layout(tmp_path):
    for c, cls in enumerate(["b_cls", "a_cls"]):
        for i in range(3):
            _png(tmp_path / "train" / cls / "images" / f"{i}.png", 10 * c + i)
        _png(tmp_path / "val" / cls / "v.PNG", 100 + c, mode="L")
    train, test, info = load_dataset("folder", data_dir=str(tmp_path))
    assert info.num_classes == 2 and info.size == 16 and info.channels == 3 and info.augment_crop_padding == 2
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1]  # sorted class names: a_cls = 0
    assert int(train.images[0, 0, 0, 0]) == 10 and test.images.shape == (2, 3, 16, 16)
    assert int(test.images[0, 1, 5, 5]) == 101  # grayscale converted to RGB


def test_folder_tiny_imagenet_layout(tmp_path):
    for cls, v in (("n01", 1), ("n02", 2)):
        _png(tmp_path / "train" / cls / "images" / f"{cls}_0.JPEG", v)
    for i, cls in enumerate(["n02", "n01", "n02"]):
        _png(tmp_path / "val" / "images" / f"val_{i}.JPEG", 50 + i)
    lines = [f"val_{i}.JPEG\t{cls}\t0\t0\t10\t10" for i, cls in enumerate(["n02", "n01", "n02"])]
    (tmp_path / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    train, test, _ = load_dataset("folder", data_dir=str(tmp_path))
    assert train.labels.tolist() == [0, 1] and test.labels.tolist() == [1, 0, 1]
    (tmp_path / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99\t0\t0\t1\t1\n")
    with pytest.raises(DataError, match="line 1: unknown .*n99"):
        load_dataset("folder", data_dir=str(tmp_path))


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset("folder")
    with pytest.raises(DataError, match="expected .*train"):
        load_dataset("folder", data_dir=str(tmp_path))
    _png(tmp_path / "train" / "a" / "0.png", 1)
    _png(tmp_path / "train" / "a" / "1.png", 1, size=8)
    _png(tmp_path / "val" / "a" / "0.png", 1)
    with pytest.raises(DataError, match="resize"):
        load_dataset("folder", data_dir=str(tmp_path))
    (tmp_path / "train" / "a" / "1.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="1.png"):
        load_dataset("folder", data_dir=str(tmp_path))


# --- augmentation -----------------------------------------------------------------------------


def _naive(x, crop, flip, p, fill=0.0):
    out = []
    for i in range(x.shape[0]):
        frame = torch.full((x.shape[1], x.shape[2] + 2 * p, x.shape[3] + 2 * p), fill)
        frame[:, p:p + x.shape[2], p:p + x.shape[3]] = x[i]
        dy, dx = (int(v) for v in crop[i])
        patch = frame[:, dy:dy + x.shape[2], dx:dx + x.shape[3]]
        out.append(patch.flip(-1) if flip is not None and flip[i] else patch)
    return torch.stack(out)


def test_augment_identity_at_center():
    x = torch.rand(5, 3, 8, 8)
    aug = Augment(padding=3, flip=False)
    assert torch.equal(aug.apply(x, torch.full((5, 2), 3), None), x)
    assert torch.equal(Augment(0, False).apply(x, None, None), x)


def test_augment_matches_naive_reference():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(16, 2, 7, 9)
    aug = Augment(padding=2, flip=True, fill=0.5)
    crop, flip = aug.sample(16, gen)
    assert crop.min() >= 0 and crop.max() <= 4 and crop.dtype == torch.int64 and flip.dtype == torch.bool
    assert flip.any() and not flip.all()
    assert torch.equal(aug.apply(x, crop, flip), _naive(x, crop, flip, 2, fill=0.5))
    assert aug.pad(x).shape == (16, 2, 11, 13)


def test_augment_frame_round_trip():
    gen = torch.Generator().manual_seed(1)
    aug = Augment(padding=4, flip=True)
    crop, flip = aug.sample(8, gen)
    frame = torch.rand(8, 3, 40, 40)
    patch = torch.rand(8, 3, 32, 32)
    written = aug.to_frame(patch, frame, crop, flip)
    assert torch.equal(aug.from_frame(written, crop, flip), patch)
    outside = torch.ones_like(frame, dtype=torch.bool)
    for i in range(8):  # pixels outside each window are untouched
        dy, dx = (int(v) for v in crop[i])
        outside[i, :, dy:dy + 32, dx:dx + 32] = False
    assert torch.equal(written[outside], frame[outside])
    x = torch.rand(8, 3, 32, 32)  # a perturbation cached in frame coordinates moves with the image
    assert torch.equal(aug.from_frame(aug.pad(x), crop, flip), aug.apply(x, crop, flip))
    flip_only = Augment(0, True)
    c, f = flip_only.sample(8, gen)
    assert c is None and torch.equal(flip_only.from_frame(flip_only.to_frame(patch, patch, c, f), c, f), patch)


# --- loader -----------------------------------------------------------------------------------


def _toy(n=50, classes=5):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 6, 6).contiguous()
    return Dataset(images, torch.arange(n) % classes, classes, "toy")


def _batches(loader, epoch, start=0):
    return [(b.index.clone(), b.x.clone(), None if b.crop is None else b.crop.clone()) for b in loader.epoch(epoch, start)]


def test_loader_deterministic_and_epochs_differ():
    ds = _toy()
    mk = lambda: Loader(ds, batch_size=8, seed=7, augment=Augment(1, True))  # noqa: E731
    a, b = _batches(mk(), 0), _batches(mk(), 0)
    assert len(a) == len(mk()) == 7
    assert all(torch.equal(u[0], v[0]) and torch.equal(u[1], v[1]) for u, v in zip(a, b))
    c = _batches(mk(), 1)
    assert not torch.equal(torch.cat([t[0] for t in a]), torch.cat([t[0] for t in c]))
    assert sorted(torch.cat([t[0] for t in a]).tolist()) == list(range(50))
    skipped = _batches(mk(), 0, start=3)
    assert len(skipped) == 4
    assert all(torch.equal(u[0], v[0]) and torch.equal(u[1], v[1]) for u, v in zip(a[3:], skipped))


def test_loader_index_labels_and_values():
    ds = _toy()
    idx = class_balanced_subset(ds, 20)
    loader = Loader(ds, batch_size=6, seed=0, augment=None, indices=idx, drop_last=True)
    seen = []
    for b in loader.epoch(0):
        assert b.x.dtype == torch.float32 and b.crop is None and b.flip is None and b.views == []
        assert torch.equal(b.y, ds.labels[b.index])
        assert torch.allclose(b.x[:, 0, 0, 0], b.index.float() / 255)
        seen += b.index.tolist()
    assert len(loader) == 3 and len(seen) == 18 and set(seen) <= set(idx.tolist())
    ordered = torch.cat([b.index for b in make_eval_loader(ds, 16, "cpu")])
    assert torch.equal(ordered, torch.arange(50))


def test_loader_ranks_cover_global_batches():
    ds = _toy(53)
    aug = Augment(2, True)
    single = list(Loader(ds, batch_size=8, seed=3, augment=aug).epoch(2))
    ranks = [list(Loader(ds, batch_size=4, seed=3, augment=aug, rank=r, world_size=2).epoch(2)) for r in range(2)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 7
    for g, (r0, r1) in zip(single, zip(*ranks)):
        assert torch.equal(torch.cat([r0.index, r1.index]), g.index)
        assert torch.equal(torch.cat([r0.x, r1.x]), g.x)  # same augmentation too
        assert torch.equal(torch.cat([r0.crop, r1.crop]), g.crop)


def test_loader_views():
    ds = _toy()
    loader = Loader(ds, batch_size=10, seed=1, augment=Augment(2, True), views=3)
    b = next(iter(loader.epoch(0)))
    assert len(b.views) == 2
    for v in b.views:
        assert torch.equal(v.index, b.index) and torch.equal(v.y, b.y) and v.views == []
        assert not torch.equal(v.crop, b.crop)
    aug = loader.augment
    base = ds.images[b.index].float() / 255
    for v in [b] + b.views:
        assert torch.equal(v.x, aug.apply(base, v.crop, v.flip))
