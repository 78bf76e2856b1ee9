"""``advcore eval`` and friends on real (tiny) digits runs: contract, sanity checks, EMA, plots, margins."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file
from typer.testing import CliRunner

from advcore.evaluation import evaluate as evaluate_module
from advcore.runtime.checkpoint import load_checkpoint
from advcore.cli.app import app
from advcore.runtime.ema import WeightAverage
from advcore.evaluation.eval_checks import gradient_masking_checks, summarize_checks
from advcore.evaluation.evaluate import eval_data, load_model
from advcore.testing import tiny_batch, tiny_config, tiny_run
from advcore.engine import build_run, restore_checkpoint, train, train_step, write_checkpoint

ENV = dict(os.environ, ADVCORE_PROGRESS="0", OMP_NUM_THREADS="1")  # one thread: the test machine is shared


def cli(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A PGD-AT run with EMA (robust) and a standard run, both a few seconds on digits."""
    root = tmp_path_factory.mktemp("runs")
    common = dict(data={"subset": 1000, "batch_size": 64}, attack={"steps": 3}, eval={"n": 64, "pgd_steps": 5})
    train(tiny_config(["pgd-at"], epochs=8, ema={"decay": 0.9}, **common), root / "robust", log=lambda s: None)
    train(tiny_config(["standard"], epochs=6, **common), root / "standard", log=lambda s: None)
    return root / "robust", root / "standard"


def reference_pgd_accuracy(model, x, y, eps, steps):
    """Madry's PGD written out: uniform start, signed steps of eps/4, clip, final iterate."""
    x_adv = (x + (torch.rand_like(x) * 2 - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = nn.functional.cross_entropy(model(x_adv), y)
        (g,) = torch.autograd.grad(loss, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + eps / 4 * g.sign(), x - eps), x + eps).clamp(0, 1)
    with torch.no_grad():
        return (model(x_adv).argmax(1) == y).float().mean().item()


def test_eval_prints_autoattack_below_pgd_below_clean(runs):
    robust, _ = runs
    proc = subprocess.run([sys.executable, "-m", "advcore", "eval", str(robust), "--json", "--n", "64", "-a", "pgd",
                           "-a", "autoattack", "--aa-version", "custom", "--aa-attack", "apgd-ce", "--aa-attack",
                           "apgd-t"], capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["autoattack_custom_acc"] <= result["pgd20_acc"] <= result["clean_acc"]
    assert result["pgd20_acc"] < result["clean_acc"] - 0.1 and result["autoattack_custom_acc"] > 0.1
    assert list(result["autoattack_custom_by_attack"]) == ["apgd-ce", "apgd-t"]
    assert list((robust / "eval").glob("autoattack-*.json"))  # resumable state kept in the run
    model, _, _ = load_model(robust, "cpu")
    x, y, _ = eval_data("digits", None, 64, 0)
    reference = reference_pgd_accuracy(model, x, y, 0.1, 20)
    assert result["pgd20_acc"] <= reference + 2 / 64  # counting any broken iterate is at least as strong


class Quantized(nn.Module):
    """Gradient masking on purpose: rounding the input has zero gradient almost everywhere."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 8) / 8)


def test_masking_checks_pass_a_robust_model_and_flag_a_masked_one(runs):
    robust, standard = runs
    model, _, _ = load_model(robust, "cpu")
    surrogate, _, _ = load_model(standard, "cpu")
    x, y, _ = eval_data("digits", None, 64, 0)
    honest = summarize_checks(gradient_masking_checks(model, x, y, eps=0.1, steps=10, surrogate=surrogate,
                                                      square_queries=300, progress=False))
    assert honest["passed"], honest
    assert all(r["passed"] for r in honest["results"])  # none skipped: the surrogate was given
    masked = summarize_checks(gradient_masking_checks(Quantized(model), x, y, eps=0.1, steps=10,
                                                      square_queries=300, progress=False))
    assert not masked["passed"]
    assert {"black_box_weaker", "eps_to_zero"} <= set(masked["failed"])


def test_eval_checks_flag_the_run_on_the_command_line(runs, monkeypatch):
    robust, _ = runs
    real = evaluate_module.load_target

    def masked_target(*args, **kwargs):
        target = real(*args, **kwargs)
        target.model = Quantized(target.model)
        return target

    monkeypatch.setattr(evaluate_module, "load_target", masked_target)
    result = cli("eval", robust, "-a", "pgd-10", "--n", "48", "--checks")
    assert result.exit_code == 3
    assert "FAIL  black_box_weaker" in result.stdout
    assert "FLAGGED: possible gradient masking" in result.output


def test_plain_state_dicts_evaluate_like_the_checkpoint(runs, tmp_path):
    robust, _ = runs
    _, tensors = load_checkpoint(robust)
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    save_file(weights, str(tmp_path / "model.safetensors"))
    torch.save({"model_state_dict": weights}, tmp_path / "model.pt")
    expected = json.loads(cli("eval", robust, "--checkpoint", "last", "-a", "pgd-5", "--n", "64", "--json").stdout)
    for name in ("model.safetensors", "model.pt"):
        result = cli("eval", tmp_path / name, "--arch", "small-cnn", "--dataset", "digits", "--width", "8",
                     "-a", "pgd-5", "--n", "64", "--json")
        assert result.exit_code == 0, result.output
        got = json.loads(result.stdout)
        assert (got["clean_acc"], got["pgd5_acc"]) == (expected["clean_acc"], expected["pgd5_acc"])
    missing = cli("eval", tmp_path / "model.pt", "-a", "pgd")
    assert "pass --arch" in str(missing.exception)


def test_ema_follows_the_moving_average_formula():
    run = tiny_run(["pgd-at"], ema={"decay": 0.8, "warmup": False})
    ema = run.stash["advcore.ema"]
    w0 = {k: v.clone() for k, v in run.model.state_dict().items()}
    train_step(run, tiny_batch(run, 16), 0, 0)
    w1 = {k: v.clone() for k, v in run.model.state_dict().items()}
    train_step(run, tiny_batch(run, 16, start=16), 0, 1)
    w2 = run.model.state_dict()
    for key in w0:
        expected = 0.8 * (0.8 * w0[key] + 0.2 * w1[key]) + 0.2 * w2[key]
        assert torch.allclose(ema.module.state_dict()[key], expected, atol=1e-6), key
    assert not torch.allclose(ema.module.state_dict()["head.weight"], w2["head.weight"])
    warm = WeightAverage(nn.Linear(2, 2), decay=0.999)
    assert [warm.current_decay() for _ in range(1)] == [pytest.approx(0.1)]  # (1 + 0) / (10 + 0)


def test_ema_is_saved_evaluated_and_restored(runs, tmp_path):
    robust, _ = runs
    records = [json.loads(line) for line in (robust / "metrics.jsonl").read_text().splitlines()]
    assert {"ema_clean_acc", "ema_robust_acc"} <= set(records[-1])
    _, tensors = load_checkpoint(robust)
    model, _, _ = load_model(robust, "cpu", ema=True)
    assert torch.equal(model.state_dict()["head.weight"], tensors["ema.head.weight"])
    assert not torch.equal(tensors["ema.head.weight"], tensors["model.head.weight"])
    result = json.loads(cli("eval", robust, "--ema", "-a", "fgsm", "--n", "32", "--json").stdout)
    assert result["weights"] == "ema"
    # a checkpoint round trip restores the average and its update count
    config = tiny_config(["pgd-at"], ema={"decay": 0.9})
    run, _ = build_run(config, tmp_path / "a")
    train_step(run, tiny_batch(run, 16), 0, 0)
    write_checkpoint(run, "last", epoch=1)
    other, _ = build_run(config, tmp_path / "b")
    restore_checkpoint(other, tmp_path / "a" / "checkpoints" / "last")
    a, b = run.stash["advcore.ema"], other.stash["advcore.ema"]
    assert b.updates == a.updates == 1
    assert all(torch.equal(a.module.state_dict()[k], v) for k, v in b.module.state_dict().items())
    _, standard = runs
    assert "holds no EMA weights" in str(cli("eval", standard, "--ema", "-a", "fgsm").exception)


def test_plot_commands_write_figures_with_their_series(runs, tmp_path):
    robust, standard = runs
    result = cli("plot", "curves", robust, standard, "--out", tmp_path / "curves.png")
    assert result.exit_code == 0, result.output
    curves = json.loads((tmp_path / "curves.json").read_text())["runs"]
    metrics = [json.loads(line) for line in (robust / "metrics.jsonl").read_text().splitlines()]
    assert curves["robust"]["accuracy"]["robust_acc"]["value"] == [m["robust_acc"] for m in metrics]
    assert "ema_robust_acc" in curves["robust"]["accuracy"] and "train_loss" in curves["standard"]["loss"]
    result = cli("plot", "sweep", robust, standard, "--eps", "0,0.05,0.1", "--n", "48", "--pgd-steps", "5",
                 "--out", tmp_path / "sweep.png")
    assert result.exit_code == 0, result.output
    sweep = json.loads((tmp_path / "sweep.json").read_text())["series"]
    assert sweep["robust"]["x"] == sweep["standard"]["x"] == [0.0, 0.05, 0.1]
    assert sweep["robust"]["acc"][2] > sweep["standard"]["acc"][2] + 0.2  # adversarial training worked
    assert sweep["robust"]["acc"] == sorted(sweep["robust"]["acc"], reverse=True)
    result = cli("plot", "tradeoff", robust, standard, "--out", tmp_path / "tradeoff.png")
    assert result.exit_code == 0, result.output
    points = json.loads((tmp_path / "tradeoff.json").read_text())["points"]
    assert [p["label"] for p in points] == ["robust", "standard"]
    assert points[0]["robust_acc"] == metrics[-1]["robust_acc"]
    for name in ("curves", "sweep", "tradeoff"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_margin_command_reports_larger_margins_for_the_robust_model(runs, tmp_path):
    robust, standard = runs
    result = cli("margin", standard, robust, "--n", "32", "--steps", "5", "--json", "--out", tmp_path / "m.png")
    assert result.exit_code == 0, result.output
    margins = json.loads(result.stdout)
    assert margins["robust"]["median"] > margins["standard"]["median"]
    assert (tmp_path / "m.png").is_file() and len(margins["robust"]["margins"]) == 32


def test_report_tabulates_eval_results_and_runs(runs, tmp_path):
    robust, standard = runs
    cli("eval", robust, "-a", "fgsm", "--n", "32", "--out", tmp_path / "ev")
    assert (tmp_path / "ev" / "eval.md").read_text().startswith("| model | n | eps | clean | fgsm |")
    table = cli("report", tmp_path / "ev" / "eval.json", standard).stdout.splitlines()
    assert table[0] == "| model | n | eps | clean | fgsm | robust |"
    assert table[2].startswith("| robust | 32 | 0.1 |") and table[3].startswith("| standard | - | - |")
