"""``advcore export``: a plain safetensors state dict, and the printed lines load it with identical logits."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from advcore.cli.app import app
from advcore.errors import AdvcoreError
from advcore.evaluation.evaluate import load_model
from advcore.engine import train
from advcore.testing import tiny_config

TESTS = Path(__file__).resolve().parent
ADVCORE = str(Path(sys.executable).with_name("advcore"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    train(tiny_config(["pgd-at"], epochs=2, ema={"decay": 0.8}, data={"subset": 300, "batch_size": 64},
                      attack={"steps": 2}, eval={"n": 32, "pgd_steps": 2}), out, log=lambda s: None)
    return out


def printed_model(stdout: str) -> torch.nn.Module:
    """Run the three printed lines, as a user pasting them would."""
    lines = [line.strip() for line in stdout.splitlines()[1:]]
    assert len(lines) == 3 and lines[-1].startswith("model.load_state_dict(load_file(")
    namespace: dict = {}
    exec("\n".join(lines), namespace)
    return namespace["model"].eval()


@pytest.mark.parametrize("ema", [False, True])
def test_export_round_trips_logits_exactly(run, tmp_path, ema):
    out = tmp_path / "model.safetensors"
    args = ["export", str(run), str(out)] + (["--ema"] if ema else [])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"wrote {out} ({'EMA' if ema else 'model'} weights); load it with:")
    fresh = printed_model(result.stdout)
    trained = load_model(run / "checkpoints" / "best", "cpu", ema=ema)[0]
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(fresh(x), trained(x))
    other = load_model(run / "checkpoints" / "best", "cpu", ema=not ema)[0]
    with torch.no_grad():
        assert not torch.equal(fresh(x), other(x))  # EMA and model weights differ: the flag chose


def test_export_of_a_user_model_by_the_real_executable(tmp_path, monkeypatch):
    import advcore.api as api

    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.chdir(tmp_path)
    api.train("tests_pkg.module:factory", "tests_pkg.module:data", epochs=1, device="cpu", out="run", quiet=True,
              settings={"model.kwargs.width": 4, "attack.steps": 1, "eval.n": 16})
    env = dict(os.environ, PYTHONPATH=str(TESTS), ADVCORE_PROGRESS="0", OMP_NUM_THREADS="1")
    proc = subprocess.run([ADVCORE, "export", "run", "mine.safetensors", "--checkpoint", "last"], env=env,
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "from tests_pkg.module import factory" in proc.stdout and "model = factory(width=4)" in proc.stdout
    fresh = printed_model(proc.stdout)
    reference = load_model(tmp_path / "run" / "checkpoints" / "last", "cpu")[0]
    x = torch.rand(8, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(fresh(x), reference(x))
    bad = CliRunner().invoke(app, ["export", "run", "mine.pt"])
    assert str(bad.exception) == "export: mine.pt must end in .safetensors (a plain state dict, no pickle)"


def test_export_without_ema_weights_is_one_clear_error(tmp_path):
    out = tmp_path / "plain"
    train(tiny_config(["standard"], epochs=1, data={"subset": 200}, eval={"n": 16, "pgd_steps": 1}), out,
          log=lambda s: None)
    result = CliRunner().invoke(app, ["export", str(out), str(tmp_path / "m.safetensors"), "--ema"])
    assert isinstance(result.exception, AdvcoreError)
    assert "holds no EMA weights; train with --set ema.decay=0.999 or export without --ema" in str(result.exception)


def test_the_weight_average_is_the_formula_bit_for_bit():
    """EMA kept by swa_utils.AveragedModel equals avg.mul_(d).add_(w, alpha=1 - d) with the warm-up decay."""
    from advcore.runtime.ema import WeightAverage

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.Linear(144, 3))
    ema = WeightAverage(model, decay=0.99)
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    for t in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model(torch.rand(4, 1, 8, 8))  # BatchNorm statistics and counter move too
        ema.update(model)
        d = min(0.99, (1 + t) / (10 + t))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                reference[k].mul_(d).add_(v, alpha=1 - d)
            else:
                reference[k].copy_(v)
    assert all(torch.equal(ema.module.state_dict()[k], v) for k, v in reference.items())
    restored = WeightAverage(model, decay=0.99)
    restored.load_state_dict(ema.state_dict())
    ema.update(model)
    restored.update(model)
    assert restored.updates == 6 and all(torch.equal(a, b) for a, b in
                                         zip(ema.module.state_dict().values(), restored.module.state_dict().values()))
