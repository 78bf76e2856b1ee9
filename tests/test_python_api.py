"""docs/python-api.md runs as written, and advcore.api behaves as it says."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

import advcore.api as api
from advcore.data.datasets import DataError
from advcore.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "python-api.md"
ADVCORE = str(Path(sys.executable).with_name("advcore"))


def blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", PAGE.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_every_python_example_of_the_page_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ADVCORE_PROGRESS", "0")
    exec(compile(blocks("python")[index], f"python-api.md example {index + 1}", "exec"), {"__name__": "__doc__"})


def test_the_command_line_examples_of_the_page_run_and_agree(tmp_path):
    """The page's shell lines, run by the real executable; the exported weights in the user's
    module give the same report as the run they came from."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "tests"), ADVCORE_PROGRESS="0", OMP_NUM_THREADS="1")
    outputs = []
    for line in blocks("bash")[0].splitlines():
        if not line.startswith("advcore "):
            continue
        args = shlex.split(line)[1:]
        if args[0] == "eval":
            args.append("--json")
        proc = subprocess.run([ADVCORE, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (line, proc.stderr)
        outputs.append(proc.stdout)
    assert len(outputs) == 4
    run_report, exported_report = json.loads(outputs[1]), json.loads(outputs[3])
    for key in ("n", "eps", "clean_acc", "pgd5_acc"):
        assert run_report[key] == exported_report[key]
    assert "model = factory(num_classes=4)" in outputs[2]
    spec = json.loads((tmp_path / "runs" / "mine" / "checkpoints" / "last.json").read_text())["model"]
    assert (spec["factory"], spec["kwargs"]) == ("tests_pkg.module:factory", {"num_classes": 4})
    assert "advcore: tests_pkg.module:data, 2 batches/epoch" in outputs[0]  # 192 samples / 128


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    return x, (x[:, 0, :4].mean((1, 2)) > x[:, 0, 4:].mean((1, 2))).long()


TINY = {"attack.steps": 2, "eval.n": 32, "data.batch_size": 32}


def test_a_factory_string_run_records_the_factory_and_returns_the_trained_model(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "tests"))
    from advcore.evaluation.evaluate import load_model

    result = api.train("tests_pkg.module:factory", "tests_pkg.module:data", plugins=["trades"], epochs=1,
                       settings={**TINY, "model.kwargs.width": 4}, device="cpu", out=tmp_path / "run", quiet=True)
    manifest = json.loads((tmp_path / "run" / "checkpoints" / "last.json").read_text())
    assert manifest["model"]["factory"] == "tests_pkg.module:factory"
    assert manifest["model"]["kwargs"] == {"width": 4}
    assert result.model.body[0].out_channels == 4 and not result.model.training
    again = load_model(tmp_path / "run" / "checkpoints" / "last", "cpu")[0]
    x, _ = _data(8, 3)
    with torch.no_grad():
        assert torch.equal(result.model(x), again(x))
    assert result.final == json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])


def test_bad_settings_are_the_cli_one_line_errors():
    x, y = _data(64, 0)
    data = TensorDataset(x, y)
    with pytest.raises(ConfigError, match=r"options\.trades\.bogus: unknown key"):
        api.train(nn.Linear(64, 2), data, data, plugins=["trades"], options={"trades": {"bogus": 1}}, quiet=True)
    with pytest.raises(ConfigError, match="pass both train_data and test_data"):
        api.train(nn.Linear(64, 2), data, quiet=True)
    with pytest.raises(DataError, match=r"images span \[-1, 1\]; advcore expects inputs in \[0, 1\]"):
        api.train(nn.Linear(64, 2), TensorDataset(x * 2 - 1, y), data, device="cpu", quiet=True)


def test_evaluate_of_a_module_matches_the_evaluation_suite():
    """The report of api.evaluate equals advcore's run_attacks on the same tensors."""
    from advcore.evaluation.evaluate import run_attacks

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    x, y = _data(40, 1)
    report = api.evaluate(model, TensorDataset(x, y), attacks=["pgd-5", "fgsm"], eps=0.05, progress=False)
    direct = run_attacks(model, x, y, eps=0.05, attacks=["pgd-5", "fgsm"], progress=False)
    assert {k: report[k] for k in direct} == direct
    assert report["n"] == 40 and report["dataset"] == "TensorDataset" and report["eps"] == 0.05


def test_the_masking_checks_reuse_the_reports_pgd():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 2))
    x, y = _data(48, 2)
    report = api.evaluate(model, (x, y), attacks=["pgd-5"], eps=0.05, checks=True, progress=False,
                          square_queries=50)
    found = {r["name"]: r for r in report["checks"]["results"]}
    assert found["more_steps"]["values"]["acc"][0] == report["pgd5_acc"]
    sweep = found["eps_monotone"]["values"]
    assert sweep["acc"][sweep["eps"].index(0.05)] == report["pgd5_acc"]


def test_attack_stays_in_the_ball_and_beats_random_noise():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    x, y = _data(64, 4)
    for kind in ("pgd", "cw", "fgsm"):
        adv = api.attack(model, x, y, kind=kind, eps=0.1, steps=10, seed=0)
        assert (adv - x).abs().max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        noise = (x + 0.1 * torch.sign(torch.randn_like(x))).clamp(0, 1)
        pgd = api.attack(model, x, y, eps=0.1, steps=10, seed=0)
        assert (model(pgd).argmax(1) == y).sum() < (model(noise).argmax(1) == y).sum()
    adv = api.attack(model, x, y, kind="pgd", norm="L2", eps=0.5, steps=5, seed=0)
    assert (adv - x).flatten(1).norm(dim=1).max() <= 0.5 + 1e-5
    adv = api.attack(model, x[:8], y[:8], kind="autoattack", eps=0.1, aa_version="custom", aa_attacks=["apgd-ce"])
    assert (adv - x[:8]).abs().max() <= 0.1 + 1e-6
    with torch.no_grad():
        assert (model(adv).argmax(1) == y[:8]).sum() <= (model(x[:8]).argmax(1) == y[:8]).sum()
    with pytest.raises(ConfigError, match="--aa-version custom needs its attacks"):
        api.attack(model, x, y, kind="autoattack", aa_version="custom")
    with pytest.raises(ConfigError, match="unknown kind 'bim'"):
        api.attack(model, x, y, kind="bim")


