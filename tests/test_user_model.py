"""Your own nn.Module and Dataset through ``package.module:factory``: training, plugins, resume, eval.

CLI behaviour is checked with the real ``advcore`` executable in a subprocess, the test
package ``tests/tests_pkg`` on its PYTHONPATH.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import advcore.api as api
from advcore.runtime.checkpoint import load_checkpoint
from advcore.kernel.config import load_config
from advcore.errors import ConfigError, PluginError
from advcore.evaluation.evaluate import load_target

TESTS = Path(__file__).resolve().parent
ADVCORE = str(Path(sys.executable).with_name("advcore"))
USER = ["--model", "tests_pkg.module:factory", "--dataset", "tests_pkg.module:data"]
TINY = ["--set", "attack.steps=2", "--set", "eval.n=32", "--set", "data.batch_size=64", "--device", "cpu"]
FAST = {"attack.steps": 2, "eval.n": 32, "data.batch_size": 64}


def advcore(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(TESTS), ADVCORE_PROGRESS="0", OMP_NUM_THREADS="1")
    return subprocess.run([ADVCORE, *map(str, args)], env=env, capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.fixture
def on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))


def one_line_error(proc, *fragments):  # exit 1: a problem the user can fix (docs/errors.md#exit-codes)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr


def test_he_on_a_model_without_the_protocol_is_one_line_and_works_on_one_with_it(tmp_path, on_path):
    proc = advcore("train", "--model", "tests_pkg.module:plain", "--dataset", "tests_pkg.module:data",
                   "--plugin", "he", *TINY, "--epochs", "1")
    one_line_error(proc, "plugin 'he' needs a model with features(x) and an nn.Linear head",
                   "Sequential lacks features(x) and an nn.Linear head")
    result = api.train("tests_pkg.module:factory", "tests_pkg.module:data", plugins=["he"], epochs=1,
                       settings=FAST, device="cpu", out=tmp_path / "he", quiet=True)
    manifest = json.loads((tmp_path / "he" / "checkpoints" / "last.json").read_text())
    assert manifest["model"]["head"]["out_features"] == 10
    assert type(result.model.head).__name__ == "HypersphereHead"  # rebuilt with the plugin's head


def test_hat_trains_its_standard_network_from_the_same_factory(tmp_path, on_path):
    api.train("tests_pkg.module:factory", "tests_pkg.module:data", plugins=["hat"], epochs=1,
              options={"hat": {"std_epochs": 1}}, settings=FAST, device="cpu", out=tmp_path / "hat", quiet=True)
    standard = json.loads((tmp_path / "hat" / "hat-standard" / "checkpoints" / "last.json").read_text())
    assert standard["model"]["factory"] == "tests_pkg.module:factory"


def test_torchvision_resnet18_with_num_classes_trains_and_he_refuses_it_in_one_line(tmp_path, on_path):
    tv = ["--model", "torchvision.models:resnet18", "--set", "model.kwargs.num_classes=3",
          "--dataset", "tests_pkg.module:rgb", "--epochs", "1", "--device", "cpu"]
    proc = advcore("train", *tv, "--set", "attack.steps=1", "--set", "eval.n=8", "--set", "eval.pgd_steps=2",
                   "--set", "data.batch_size=64", "--out", tmp_path / "tv")
    assert proc.returncode == 0, proc.stderr
    model = load_target(tmp_path / "tv", device="cpu").model
    assert model.fc.out_features == 3 and not model.training  # load_target returns eval mode
    with pytest.raises(PluginError, match="plugin 'he' needs .*; ResNet lacks features\\(x\\) and an nn.Linear head;"):
        api.train("torchvision.models:resnet18", "tests_pkg.module:rgb", plugins=["he"], device="cpu", quiet=True,
                  settings={"model.kwargs.num_classes": 3})


def test_unstable_indices_and_bad_factories_are_one_line(on_path):
    from advcore.models.architectures import build_user_model

    one_line_error(advcore("train", "--model", "tests_pkg.module:factory", "--dataset", "tests_pkg.module:jittered"),
                   "dataset[0] returned a different sample on a second read", "stable indices")
    for factory, message in (("tests_pkg.module:nope", "model.factory: tests_pkg.module has no 'nope'"),
                             ("no_such_pkg.mod:f", "cannot import no_such_pkg.mod"),
                             ("tests_pkg.module:data", "returned a TensorDataset, not a torch.nn.Module")):
        with pytest.raises(ConfigError, match=message):
            build_user_model(factory)
    with pytest.raises(ConfigError, match=r"tests_pkg.module:factory gives 3 logits but the data has 4 classes; "
                                          r"pass --set model.kwargs.num_classes=4"):
        api.train("tests_pkg.module:factory", "tests_pkg.module:data", settings={"model.kwargs.num_classes": 3},
                  device="cpu", quiet=True)
    with pytest.raises(ConfigError, match=r"torchvision.models:resnet18 fails on the data's inputs of shape "
                                          r"\(2, 1, 8, 8\) \(RuntimeError: .*3 channels"):
        api.train("torchvision.models:resnet18", "tests_pkg.module:data", device="cpu", quiet=True)
    with pytest.raises(ConfigError, match="pass its arguments as --set model.kwargs"):
        build_user_model("tests_pkg.module:factory", {"depth": 3})
    with pytest.raises(ConfigError, match="model.factory: 'no colon' is not of the form package.module:factory"):
        load_config(None, ["model.factory=no colon"])
    with pytest.raises(ConfigError, match="data.dataset: invalid value 'imagenet'"):
        load_config(None, ["data.dataset=imagenet"])
    with pytest.raises(ConfigError, match="model.factory replaces model.arch"):
        load_config(None, ["model.factory=a.b:c", "model.arch=resnet18"])


def test_a_user_model_run_resumes_bit_exactly(tmp_path, on_path):
    from advcore.engine import train

    cfg = load_config(None, [f"{k}={v}" for k, v in FAST.items()] + ["ema.decay=0.9"], epochs=2, device="cpu",
                      deterministic=True,
                      **{"model.factory": "tests_pkg.module:factory", "data.dataset": "tests_pkg.module:data",
                         "plugins": ["trades"]})
    log = lambda *a: None  # noqa: E731
    whole = train(cfg, tmp_path / "whole", log=log)
    train(cfg, tmp_path / "split", log=log, stop_after=1)
    resumed = train(cfg, tmp_path / "split", resume=True, log=log)
    assert [m["train_loss"] for m in whole] == [m["train_loss"] for m in resumed]
    _, a = load_checkpoint(tmp_path / "whole")
    _, b = load_checkpoint(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith(("model.", "ema.")))
    assert any(k.startswith("ema.") for k in a)


def test_eval_takes_the_best_checkpoint_unless_told_last(tmp_path, on_path):
    """best/last of one run are replaced by two different runs' checkpoints: the report follows the tag."""
    from advcore.evaluation.evaluate import evaluate_checkpoint

    for name, seed in (("a", 0), ("b", 5)):
        api.train("tests_pkg.module:factory", "tests_pkg.module:data", epochs=1, seed=seed, settings=FAST,
                  device="cpu", out=tmp_path / name, quiet=True)
    ckpts = tmp_path / "a" / "checkpoints"
    for f in ckpts.glob("best*"):
        f.unlink()
    for f in (tmp_path / "b" / "checkpoints").glob("best*"):
        shutil.copy(f, ckpts / f.name)
    proc = advcore("eval", tmp_path / "a", "-a", "fgsm", "--n", "64", "--json")
    assert proc.returncode == 0, proc.stderr
    best = json.loads(proc.stdout)

    def ref(path, **kw):
        return evaluate_checkpoint(path, attacks=["fgsm"], n=64, device="cpu", progress=False, **kw)

    ref_b = ref(tmp_path / "b" / "checkpoints" / "best.json")
    assert best["checkpoint_tag"] == "best"
    assert (best["clean_acc"], best["fgsm_acc"]) == (ref_b["clean_acc"], ref_b["fgsm_acc"])
    for tag, source in (("best", tmp_path / "b" / "checkpoints" / "best"), ("last", ckpts / "last")):
        loaded = load_target(tmp_path / "a", device="cpu", checkpoint=tag).model
        _, tensors = load_checkpoint(source)
        assert all(torch.equal(v, tensors[f"model.{k}"]) for k, v in loaded.state_dict().items()), tag
    _, other = load_checkpoint(ckpts / "last")
    _, swapped = load_checkpoint(ckpts / "best")
    assert not torch.equal(other["model.head.weight"], swapped["model.head.weight"])  # the two can be told apart
    with pytest.raises(ConfigError, match="--checkpoint: invalid value 'first'"):
        ref(tmp_path / "a", checkpoint="first")


def test_eval_of_a_user_module_from_wrapped_state_dicts_matches_the_run(tmp_path, on_path):
    """DataParallel/RobustBench-style .pt files ({"state_dict": {"module.x": ...}}) load into the factory's module."""
    from advcore.errors import CheckpointError
    from advcore.evaluation.evaluate import evaluate_checkpoint

    api.train("tests_pkg.module:factory", "tests_pkg.module:data", epochs=1, settings=FAST, device="cpu",
              out=tmp_path / "run", quiet=True)
    _, tensors = load_checkpoint(tmp_path / "run" / "checkpoints" / "best")
    weights = {"module." + k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    torch.save({"state_dict": weights}, tmp_path / "wrapped.pt")
    common = dict(attacks=["pgd-3"], n=48, device="cpu", progress=False)
    expected = evaluate_checkpoint(tmp_path / "run", **common)
    got = evaluate_checkpoint(tmp_path / "wrapped.pt", model="tests_pkg.module:factory",
                              dataset="tests_pkg.module:data", **common)
    assert (got["clean_acc"], got["pgd3_acc"], got["n"]) == (expected["clean_acc"], expected["pgd3_acc"], 48)
    with pytest.raises(CheckpointError, match=r"wrapped.pt does not fit tests_pkg.module:factory \(.*size mismatch"):
        evaluate_checkpoint(tmp_path / "wrapped.pt", model="tests_pkg.module:factory", model_kwargs={"width": 4},
                            dataset="tests_pkg.module:data", **common)
    with pytest.raises(ConfigError, match="needs --dataset"):
        evaluate_checkpoint(tmp_path / "wrapped.pt", model="tests_pkg.module:factory", **common)
