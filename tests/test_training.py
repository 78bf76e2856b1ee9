"""End-to-end training on real data, resume, checkpoints."""

import json

import pytest
import torch

from advcore.runtime import checkpoint as ckpt
from advcore.errors import CheckpointError
from advcore.testing import tiny_config
from advcore.engine import train


def digits_config(plugins, **over):
    base = {"epochs": 6, "data": {"dataset": "digits", "batch_size": 64, "subset": None},
            "model": {"arch": "small-cnn", "width": 16}, "attack": {"eps": 0.1, "steps": 5},
            "eval": {"n": 359, "pgd_steps": 10}}
    base.update(over)
    return tiny_config(plugins, **base)


def test_pgd_at_is_clearly_more_robust_than_standard_training(tmp_path):
    """The foundation's promise on real data (scikit-learn digits, held-out split)."""
    robust = train(digits_config(["pgd-at"]), tmp_path / "at", log=lambda _: None)[-1]
    plain = train(digits_config(["standard"]), tmp_path / "std", log=lambda _: None)[-1]
    assert plain["clean_acc"] > 0.85 and robust["clean_acc"] > 0.7
    assert robust["robust_acc"] > plain["robust_acc"] + 0.2, (robust, plain)


def test_run_directory_artefacts(tmp_path):
    history = train(tiny_config(["trades"], epochs=2), tmp_path, log=lambda _: None)
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == history and [m["epoch"] for m in lines] == [1, 2]
    for key in ("epoch", "clean_acc", "robust_acc", "train_loss", "seconds"):
        assert key in lines[0]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["plugins"] == ["trades"]
    manifest, tensors = ckpt.load_checkpoint(tmp_path / "checkpoints" / "last")
    assert manifest["epoch"] == 2 and [p["name"] for p in manifest["plugins"]] == ["pgd", "trades"]  # canonical order
    assert any(k.startswith("model.") for k in tensors) and "rng.torch" in tensors
    assert (tmp_path / "checkpoints" / "best.json").exists()
    assert not list(tmp_path.glob("checkpoints/*.tmp"))


def _weights(out):
    _, tensors = ckpt.load_checkpoint(out / "checkpoints" / "last")
    return {k: v for k, v in tensors.items() if k.startswith(("model.", "optim.", "state."))}


@pytest.mark.parametrize("plugins", [["trades"], ["pgd-at", "fgsm-rs"]])
def test_resume_after_epoch_one_matches_an_uninterrupted_run(tmp_path, plugins):
    config = tiny_config(plugins, epochs=3, deterministic=True)
    train(config, tmp_path / "full", log=lambda _: None)
    train(config, tmp_path / "split", log=lambda _: None, stop_after=1)
    assert len((tmp_path / "split" / "metrics.jsonl").read_text().splitlines()) == 1
    train(config, tmp_path / "split", resume=True, log=lambda _: None)
    full, split = _weights(tmp_path / "full"), _weights(tmp_path / "split")
    assert full.keys() == split.keys()
    for key in full:
        assert torch.equal(full[key], split[key]), key
    assert len((tmp_path / "split" / "metrics.jsonl").read_text().splitlines()) == 3


def test_resume_with_other_plugins_names_the_needed_ones(tmp_path):
    train(tiny_config(["trades"], epochs=2), tmp_path, log=lambda _: None, stop_after=1)
    with pytest.raises(CheckpointError, match="trained with plugins pgd, trades.*--plugin pgd --plugin trades"):
        train(tiny_config(["mart"], epochs=2), tmp_path, resume=True, log=lambda _: None)


def test_corrupt_checkpoint_is_detected(tmp_path):
    train(tiny_config(["standard"], epochs=1), tmp_path, log=lambda _: None)
    manifest = json.loads((tmp_path / "checkpoints" / "last.json").read_text())
    tensor_file = tmp_path / "checkpoints" / manifest["tensors_file"]
    data = bytearray(tensor_file.read_bytes())
    data[-10] ^= 0xFF
    tensor_file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        ckpt.load_checkpoint(tmp_path)


def test_checkpoint_files_are_never_pickles(tmp_path):
    train(tiny_config(["standard"], epochs=1), tmp_path, log=lambda _: None)
    for path in (tmp_path / "checkpoints").iterdir():
        head = path.read_bytes()[:2]
        assert head != b"\x80\x04" and head[:1] != b"\x80", path  # pickle protocol marker
        assert path.suffix in (".json", ".safetensors")


def test_fresh_run_refuses_to_overwrite_an_existing_run(tmp_path):
    train(tiny_config(["standard"], epochs=1), tmp_path, log=lambda _: None)
    from advcore.errors import ConfigError
    with pytest.raises(ConfigError, match="already holds a run; pass --resume"):
        train(tiny_config(["standard"], epochs=1), tmp_path, log=lambda _: None)
