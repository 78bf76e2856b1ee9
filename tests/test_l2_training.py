"""Training in the L2 threat model (``attack.norm=L2``): primitives, PGD, runs, evaluation, refusals.

Reference values are written out here from the geometry of the L2 ball, not computed with
the helpers under test.
"""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

import advcore_pgd
from advcore import PluginInfo, hookimpl
from advcore.attacks import ce_loss, pgd, pgd_eval, project, random_start, step_direction
from advcore.cli.app import app
from advcore.kernel.config import load_config
from advcore.data.datasets import held_out_indices
from advcore.errors import ConfigError
from advcore.evaluation.evaluate import evaluate_checkpoint
from advcore.testing import check_plugin, tiny_run
from advcore.engine import evaluate, evaluate_run, train

EPS = 128 / 255


# --- primitives on fixed tensors ------------------------------------------------------------


def test_l2_project_scales_a_long_perturbation_to_eps_and_keeps_short_ones():
    x = torch.full((3, 1, 2, 2), 0.5)
    delta = torch.tensor([[0.3, 0.4, 0.0, 0.0],     # norm 0.5 > eps 0.25: scaled by 1/2
                          [0.1, 0.0, 0.0, -0.1],    # norm 0.1414 < 0.25: kept
                          [0.0, 0.0, 0.0, 0.0]]).view(3, 1, 2, 2)
    eps = torch.tensor([0.25, 0.25, 0.25])
    out = project(x + delta, x, eps, "L2")
    moved = (out - x).flatten(1)
    assert torch.allclose(moved[0], torch.tensor([0.15, 0.2, 0.0, 0.0]), atol=1e-6)
    assert moved[0].norm().item() == pytest.approx(0.25, abs=1e-6)
    assert torch.allclose(moved[1], delta[1].flatten(), atol=1e-7)
    assert torch.equal(moved[2], torch.zeros(4))  # a zero perturbation stays zero, no NaN


def test_l2_project_uses_each_samples_own_radius_and_then_the_box():
    x = torch.tensor([0.5, 0.5, 0.95, 0.5]).view(1, 1, 2, 2).repeat(2, 1, 1, 1)
    delta = torch.tensor([0.0, 0.0, 0.6, 0.8]).view(1, 1, 2, 2).repeat(2, 1, 1, 1)  # norm 1
    out = project(x + delta, x, torch.tensor([0.5, 0.1]), "L2")
    # sample 0: delta * 0.5 = (0, 0, 0.3, 0.4); pixel 2 is 1.25 -> 1
    assert torch.allclose(out[0].flatten(), torch.tensor([0.5, 0.5, 1.0, 0.9]), atol=1e-6)
    # sample 1: delta * 0.1 = (0, 0, 0.06, 0.08); pixel 2 is 1.01 -> 1
    assert torch.allclose(out[1].flatten(), torch.tensor([0.5, 0.5, 1.0, 0.58]), atol=1e-6)
    # zero budget: x itself
    assert torch.equal(project(x + delta, x, torch.zeros(2), "L2"), x)


def test_step_direction_is_sign_for_linf_and_the_unit_gradient_for_l2():
    grad = torch.tensor([[3.0, -4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]).view(2, 1, 2, 2)
    l2 = step_direction(grad, "L2").flatten(1)
    assert torch.allclose(l2[0], torch.tensor([0.6, -0.8, 0.0, 0.0]))
    assert torch.equal(l2[1], torch.zeros(4))  # zero gradient: zero step, not NaN
    assert torch.equal(step_direction(grad, "Linf").flatten(1)[0], torch.tensor([1.0, -1.0, 0.0, 0.0]))


def test_l2_uniform_start_is_a_random_direction_at_a_uniform_radius():
    torch.manual_seed(1)
    x = torch.full((4000, 1, 8, 8), 0.5)  # radius 0.3 never reaches the box from 0.5
    eps = torch.full((4000,), 0.3)
    radii = (random_start(x, eps, "uniform", "L2") - x).flatten(1).norm(dim=1) / 0.3
    assert radii.max().item() <= 1 + 1e-5
    # radius / eps ~ U[0, 1]: mean 1/2, a quarter of the samples below 1/4
    assert radii.mean().item() == pytest.approx(0.5, abs=0.02)
    assert (radii < 0.25).float().mean().item() == pytest.approx(0.25, abs=0.03)
    directions = (random_start(x, eps, "uniform", "L2") - x).flatten(1)
    directions = directions / directions.norm(dim=1, keepdim=True)
    assert directions.mean(0).norm().item() < 0.1  # no preferred direction
    normal = random_start(x[:8], eps[:8], "normal", "L2") - x[:8]
    assert normal.std().item() == pytest.approx(0.001, rel=0.2)  # TRADES' start, whatever the norm
    assert torch.equal(random_start(x[:8], torch.zeros(8), "uniform", "L2"), x[:8])


# --- PGD on a linear model: the worst case is known in closed form ---------------------------


def linear_two_class(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    with torch.no_grad():
        model[1].weight.mul_(3)
    return model


@pytest.mark.parametrize("init", ["none", "uniform"])
def test_l2_pgd_reaches_the_linear_models_worst_case(init):
    """Two-class CE = softplus(z_other - z_y): the margin moves by eps_i * ||w_other - w_y||_2 at best."""
    model = linear_two_class()
    x = torch.full((4, 1, 8, 8), 0.5)
    x[1] += 0.01  # two different points, still far from the box for eps <= 0.3
    y = torch.tensor([0, 1, 0, 1])
    eps = torch.tensor([0.3, 0.3, 0.1, 0.2])
    adv = pgd(model, x, y, ce_loss, eps=eps, step_size=eps / 3, steps=30, init=init, norm="L2")
    w, b = model[1].weight.detach(), model[1].bias.detach()
    other = 1 - y
    diff = w[other] - w[y]                                          # [B, 64]
    margin = (x.flatten(1) * diff).sum(1) + b[other] - b[y]
    worst = torch.nn.functional.softplus(margin + eps * diff.norm(dim=1))
    assert torch.allclose(ce_loss(model(adv), y), worst, rtol=1e-4)
    moved = (adv - x).flatten(1)
    assert torch.allclose(moved.norm(dim=1), eps, atol=1e-5)
    assert torch.allclose(moved, eps[:, None] * diff / diff.norm(dim=1, keepdim=True), atol=1e-3)


def test_linf_pgd_still_reaches_the_linf_worst_case():
    """The same model under the default norm: the margin moves by eps_i * ||w_other - w_y||_1."""
    model = linear_two_class()
    x = torch.full((2, 1, 8, 8), 0.5)
    y = torch.tensor([0, 1])
    eps = torch.tensor([0.05, 0.1])
    adv = pgd(model, x, y, ce_loss, eps=eps, step_size=eps / 2, steps=4, init="uniform")
    w, b = model[1].weight.detach(), model[1].bias.detach()
    diff = w[1 - y] - w[y]
    worst = torch.nn.functional.softplus((x.flatten(1) * diff).sum(1) + b[1 - y] - b[y] + eps * diff.abs().sum(1))
    assert torch.allclose(ce_loss(model(adv), y), worst, rtol=1e-5)


def test_l2_evaluation_pgd_stays_in_the_ball():
    model = linear_two_class()
    x = torch.rand(6, 1, 8, 8)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    adv = pgd_eval(model, x, y, eps=0.4, step_size=0.1, steps=5, norm="L2")
    assert (adv - x).flatten(1).norm(dim=1).max().item() <= 0.4 + 1e-5
    assert 0 <= adv.min().item() and adv.max().item() <= 1


# --- configuration ------------------------------------------------------------------------------


def test_l2_budgets_may_exceed_one_and_must_be_given():
    cfg = load_config(None, ["attack.norm=L2", "attack.eps=2", "attack.step_size=0.5"])
    assert (cfg.attack.norm, cfg.attack.eps) == ("L2", 2.0)
    assert load_config(None, []).attack.norm == "Linf"
    with pytest.raises(ConfigError) as err:
        load_config(None, ["attack.norm=L2"])
    assert "norm L2 needs an explicit attack.eps" in str(err.value) and "attack.eps=128/255" in str(err.value)
    with pytest.raises(ConfigError, match="attack.eps: Input should be less than or equal to 1 .* attack.norm=L2"):
        load_config(None, ["attack.eps=2"])
    with pytest.raises(ConfigError, match=r"attack.norm: invalid value 'l2' \(allowed: 'Linf' or 'L2'\)"):
        load_config(None, ["attack.norm=l2", "attack.eps=0.5"])


# --- one-epoch runs ------------------------------------------------------------------------


def l2_config(plugin, **extra):
    sets = [f"plugins=[\"{plugin}\"]", "attack.norm=L2", "attack.eps=128/255", "attack.steps=5", "epochs=1",
            "device=cpu", "data.dataset=digits", "data.subset=128", "data.batch_size=32", "model.arch=small-cnn",
            "model.width=8", "eval.n=64", "eval.pgd_steps=3", *[f"{k}={v}" for k, v in extra.items()]]
    return load_config(None, sets)


@pytest.fixture
def recorded(monkeypatch):
    """Every (x, adversarial example) the default pgd adversary returns during a run."""
    calls = []

    def recording_pgd(model, x, *args, **kwargs):
        adv = pgd(model, x, *args, **kwargs)
        calls.append((x.detach().clone(), adv.detach().clone(), kwargs["norm"]))
        return adv

    monkeypatch.setattr(advcore_pgd, "pgd", recording_pgd)
    return calls


@pytest.mark.parametrize("plugin", ["pgd-at", "trades"])
def test_a_one_epoch_l2_run_trains_on_examples_inside_the_l2_ball(plugin, recorded, tmp_path):
    history = train(l2_config(plugin), tmp_path / "run", log=lambda line: None)
    assert len(recorded) == 4  # 128 samples, batches of 32
    assert {norm for _, _, norm in recorded} == {"L2"}
    dist = torch.cat([(adv - x).flatten(1).norm(dim=1) for x, adv, _ in recorded])
    assert dist.max().item() <= EPS + 1e-5
    assert (dist > 0.5 * EPS).float().mean().item() > 0.9
    assert math.isfinite(history[-1]["train_loss"]) and "robust_acc" in history[-1]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["attack"]["norm"] == "L2"


def test_the_per_epoch_evaluation_attacks_in_the_runs_norm():
    run = tiny_run(["pgd-at"], attack={"norm": "L2", "eps": 0.3}, eval={"n": 64, "pgd_steps": 3})
    idx = held_out_indices(len(run.test_set), 64, run.config.seed)
    images, labels = run.test_set.images[idx], run.test_set.labels[idx]
    common = dict(eps=0.3, step_size=0.075, steps=3, batch_size=256, device="cpu")
    torch.manual_seed(5)
    got = evaluate_run(run)
    torch.manual_seed(5)
    assert got == evaluate(run.model, images, labels, norm="L2", **common)
    # the Linf cube of radius 0.3 holds the L2 ball of radius 0.3 many times over
    assert evaluate(run.model, images, labels, norm="Linf", **common)["robust_acc"] < got["robust_acc"]


def test_eval_of_a_run_directory_defaults_to_the_runs_norm(tmp_path):
    out = tmp_path / "run"
    train(l2_config("pgd-at", **{"attack.steps": 2, "eval.n": 16, "eval.pgd_steps": 1}), out, log=lambda line: None)
    result = evaluate_checkpoint(out, attacks=["pgd"], n=32, pgd_steps=2, device="cpu", progress=False)
    assert (result["norm"], result["eps"]) == ("L2", pytest.approx(EPS))
    forced = evaluate_checkpoint(out, attacks=["pgd"], n=32, pgd_steps=2, device="cpu", norm="Linf", progress=False)
    assert forced["norm"] == "Linf"
    # the command line: no --norm means the run's
    cli = CliRunner().invoke(app, ["eval", str(out), "--attack", "pgd-2", "--n", "32", "--device", "cpu", "--json"])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.output.strip().splitlines()[-1])["norm"] == "L2"


# --- adversaries that are Linf by construction ----------------------------------------------


@pytest.mark.parametrize("plugin", ["free", "fast-atta"])
def test_linf_only_adversaries_refuse_l2_in_one_line(plugin):
    with pytest.raises(ConfigError) as err:
        tiny_run([plugin], attack={"norm": "L2", "eps": 0.5})
    assert str(err.value) == f"{plugin} supports attack.norm=Linf only; use the default pgd adversary for L2"


def test_fgsm_rs_with_l2_exits_1_with_one_line_from_the_command_line():
    proc = subprocess.run(
        [sys.executable, "-m", "advcore", "train", "--plugin", "fgsm-rs", "--set", "attack.norm=L2",
         "--set", "attack.eps=128/255", "--set", "data.subset=64", "--set", "device=cpu", "--epochs", "1"],
        capture_output=True, text=True, env=dict(os.environ, ADVCORE_PROGRESS="0"), timeout=300)
    assert proc.returncode == 1  # a user error (usage errors exit 2)
    assert proc.stderr.strip().splitlines() == [
        "error: fgsm-rs supports attack.norm=Linf only; use the default pgd adversary for L2"]
    assert "epoch 1/1" not in proc.stdout


# --- the conformance kit checks the L2 ball ----------------------------------------------------


def test_the_conformance_kit_checks_budgets_in_the_runs_norm():
    class LinfOnly:
        """Projects in the Linf ball whatever the run's norm: fine for Linf, far outside an L2 ball."""

        @hookimpl
        def advcore_plugin_info(self):
            return PluginInfo(summary="test adversary that ignores run.norm", roles=("adversary",))

        @hookimpl
        def advcore_generate_adversarial(self, step):
            return project(step.x + step.eps.view(-1, 1, 1, 1), step.x, step.eps)  # every pixel +eps (Linf)

    l2 = dict(attack={"norm": "L2", "eps": 0.5, "steps": 2}, partners=[], raise_on_problems=False)
    report = check_plugin(LinfOnly(), name="linf-only", **l2)
    found = [p for p in report.problems if p.hook == "advcore_generate_adversarial"]
    assert found and "outside the eps-ball" in found[0].message and "(L2)" in found[0].message
    assert check_plugin(LinfOnly(), name="linf-only", partners=[], raise_on_problems=False,
                        attack={"steps": 2}).ok  # the same plugin is fine under Linf
    assert check_plugin("pgd", **l2).ok
