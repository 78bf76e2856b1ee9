"""Fine-tuning (Liu et al. Sec. 6.2): --init-from a checkpoint, and extra data mixed half-and-half."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from advcore.runtime.checkpoint import load_checkpoint
from advcore.cli.app import app
from advcore.data.datasets import DataError, load_dataset
from advcore.errors import CheckpointError
from advcore.testing import tiny_config, tiny_run
from advcore.engine import build_run, train, train_step


def digits_like_npz(path, n=40, layout="nchw", dtype="uint8", seed=0):
    """n random 8x8 grey images with labels, saved the way a user would."""
    rs = np.random.RandomState(seed)
    images = rs.randint(0, 256, size=(n, 1, 8, 8)).astype(np.uint8)
    labels = rs.randint(0, 10, size=n)
    stored = images.transpose(0, 2, 3, 1) if layout == "nhwc" else images
    if dtype == "float":
        stored = stored.astype(np.float32) / 255
    np.savez(path, images=stored, labels=labels)
    return images, labels


@pytest.mark.parametrize("layout,dtype", [("nchw", "uint8"), ("nhwc", "uint8"), ("nchw", "float")])
def test_extra_samples_follow_the_training_set_and_every_batch_is_half_extra(tmp_path, layout, dtype):
    images, labels = digits_like_npz(tmp_path / "extra.npz", n=40, layout=layout, dtype=dtype)
    run, loader = build_run(tiny_config(["pgd-at"], data={"subset": 64, "batch_size": 16,
                                                          "extra": str(tmp_path / "extra.npz"), "augment": False}), None)
    n_train = len(load_dataset("digits")[0])
    assert len(run.train_set) == n_train + 40 and run.state.num_samples == n_train + 40
    assert torch.equal(run.train_set.images[n_train:], torch.from_numpy(images))
    assert torch.equal(run.train_set.labels[n_train:], torch.from_numpy(labels))
    batches = list(loader.epoch(0))
    assert len(batches) == 8  # 64 training samples, 8 per batch: the larger source sets the epoch
    seen_train, seen_extra = [], []
    for b in batches:
        extra = b.index >= n_train
        assert extra.sum() == 8 and (~extra).sum() == 8
        seen_train += b.index[~extra].tolist()
        seen_extra += b.index[extra].tolist()
        assert torch.equal(b.x[extra], run.train_set.images[b.index[extra]].float() / 255)
        assert torch.equal(b.y, run.train_set.labels[b.index])
    assert sorted(seen_train) == loader.indices.tolist()  # each training sample once
    assert set(seen_extra) == set(range(n_train, n_train + 40))  # the 40 extras cycled to fill 64 slots


def test_state_of_extra_samples_is_keyed_after_the_training_set(tmp_path):
    digits_like_npz(tmp_path / "extra.npz", n=20)
    run = tiny_run(["pgd-at", "adaptive-targets"], {"adaptive-targets": {"warmup": 0}},
                   data={"subset": 32, "batch_size": 16, "extra": str(tmp_path / "extra.npz")})
    batch = next(iter(run.loader.epoch(0)))
    train_step(run, batch, 0, 0)
    started, n_train = run.state["adaptive-targets.started"], len(load_dataset("digits")[0])
    assert started.shape == (n_train + 20,)
    assert started[n_train:].sum() == 8 and started[:n_train].sum() == 8


@pytest.mark.parametrize("content,match", [
    ({"x": np.zeros((2, 1, 8, 8), np.uint8), "labels": np.zeros(2, int)}, "no images"),
    ({"images": np.zeros((2, 3, 8, 8), np.uint8), "labels": np.zeros(2, int)}, r"expected \[N, 1, 8, 8\]"),
    ({"images": np.full((2, 1, 8, 8), 2.0), "labels": np.zeros(2, int)}, r"scale them to \[0, 1\]"),
    ({"images": np.zeros((2, 1, 8, 8), np.uint8), "labels": np.array([0, 10])}, "10 classes"),
    ({"images": np.zeros((2, 1, 8, 8), np.uint8), "labels": np.zeros(3, int)}, "one integer label per image"),
])
def test_bad_extra_files_are_one_line_errors(tmp_path, content, match):
    np.savez(tmp_path / "bad.npz", **content)
    with pytest.raises(DataError, match=match):
        build_run(tiny_config(["pgd-at"], data={"extra": str(tmp_path / "bad.npz")}), None)
    with pytest.raises(DataError, match="does not exist"):
        build_run(tiny_config(["pgd-at"], data={"extra": str(tmp_path / "none.npz")}), None)


def test_init_from_starts_from_the_checkpoint_weights_and_fine_tunes(tmp_path):
    cfg = tiny_config(["pgd-at"], epochs=1, data={"subset": 64}, attack={"steps": 1}, eval={"n": 16, "pgd_steps": 1})
    train(cfg, tmp_path / "pre", log=lambda line: None)
    saved = {k[len("model."):]: v for k, v in load_checkpoint(tmp_path / "pre")[1].items() if k.startswith("model.")}
    run, _ = build_run(cfg.model_copy(update={"init_from": str(tmp_path / "pre"), "seed": 5}), None)
    for key, value in run.model.state_dict().items():
        assert torch.equal(value, saved[key]), key
    fresh, _ = build_run(cfg.model_copy(update={"seed": 5}), None)
    assert not torch.equal(fresh.model.head.weight, saved["head.weight"])
    result = CliRunner().invoke(app, ["train", "--init-from", str(tmp_path / "pre"), "--out", str(tmp_path / "ft"),
                                      "--epochs", "1", "--subset", "64", "--set", "model.arch=small-cnn",
                                      "--set", "model.width=8", "--set", "attack.steps=1", "--set", "eval.n=16",
                                      "--set", "optim.lr=0.001", "--set", "optim.schedule=constant", "--set", "device=cpu"])
    assert result.exit_code == 0, result.output
    tuned = load_checkpoint(tmp_path / "ft")[1]
    moved = (tuned["model.head.weight"] - saved["head.weight"]).abs().max().item()
    assert 0 < moved < 0.05  # small-lr fine-tuning moved the pretrained weights a little


def test_init_from_another_architecture_names_the_fix(tmp_path):
    cfg = tiny_config(["pgd-at"], epochs=1, data={"subset": 32}, attack={"steps": 1}, eval={"n": 8, "pgd_steps": 1})
    train(cfg, tmp_path / "pre", log=lambda line: None)
    wider = cfg.model_copy(update={"init_from": str(tmp_path / "pre"), "model": cfg.model.model_copy(update={"width": 16})})
    with pytest.raises(CheckpointError, match="does not fit this model.*use the same model config"):
        build_run(wider, None)
