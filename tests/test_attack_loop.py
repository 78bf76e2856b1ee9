"""The open attack loop: ``pgd(on_step=...)`` sees every iteration and can stop samples.

Without a callback the loop must stay the plain one (same forwards, same result); with one,
the callback sees the forward the gradient came from, and a stopped sample keeps its iterate.
"""

import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import advcore_fat
from advcore.attacks import AttackStep, ce_loss, chain_callbacks, pgd
from advcore.testing import tiny_batch, tiny_run
from advcore.engine import train_step

torch.set_num_threads(1)


class Counting(torch.nn.Module):
    """A linear classifier that counts its forward calls."""

    def __init__(self, dim=12, classes=3):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(dim, classes)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.fc(x.flatten(1))


def fixture(n=8):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, 3, 4, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return x, y


def run_pgd(model, x, y, norm="Linf", **kw):
    torch.manual_seed(5)
    n = x.shape[0]
    return pgd(model, x, y, ce_loss, eps=torch.full((n,), 0.3), step_size=torch.full((n,), 0.05), steps=6,
               norm=norm, **kw)


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_a_callback_that_never_stops_changes_nothing_and_costs_no_forward(norm):
    model, (x, y) = Counting(), fixture()
    plain = run_pgd(model, x, y, norm)
    assert model.calls == 6
    seen = []
    watched = run_pgd(model, x, y, norm, on_step=lambda a: seen.append(a.index))
    assert model.calls == 12  # K forwards either way: the callback reuses the gradient's forward
    assert seen == list(range(6))
    assert torch.equal(plain, watched)


def test_the_callback_sees_the_logits_of_the_current_iterate_and_its_correctness():
    model, (x, y) = Counting(), fixture()
    views = []
    run_pgd(model, x, y, on_step=lambda a: views.append(AttackStep(a.index, a.steps, a.x_adv.clone(), a.logits,
                                                                     a.active.clone(), a.labels)))
    for a in views:
        with torch.no_grad():
            expected = model(a.x_adv)
        assert torch.allclose(a.logits, expected, atol=1e-6)
        assert torch.equal(a.correct, expected.argmax(1) == y)
        assert a.active.all() and a.steps == 6


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_a_stopped_sample_keeps_the_iterate_it_had_when_it_was_stopped(norm):
    model, (x, y) = Counting(), fixture()
    iterates = {}

    def stop_first_two_at_step_two(a):
        iterates[a.index] = a.x_adv.clone()
        stop = torch.zeros_like(a.active)
        if a.index == 2:
            stop[:2] = True
        return stop

    out = run_pgd(model, x, y, norm, on_step=stop_first_two_at_step_two)
    free = run_pgd(model, x, y, norm)
    assert torch.equal(out[:2], iterates[2][:2])
    assert not torch.equal(out[:2], free[:2])  # they would have moved on
    assert torch.equal(out[2:], free[2:])  # the others are untouched


def test_chained_callbacks_or_their_stops_and_none_means_the_plain_path():
    assert chain_callbacks(None, None) is None
    a = lambda v: torch.tensor([True, False, False])  # noqa: E731
    b = lambda v: torch.tensor([False, False, True])  # noqa: E731
    c = lambda v: None  # noqa: E731
    view = AttackStep(0, 1, torch.zeros(3, 2), torch.zeros(3, 2), torch.ones(3, dtype=torch.bool))
    assert chain_callbacks(a, None, b, c)(view).tolist() == [True, False, True]
    assert chain_callbacks(None, a) is a


def test_a_bad_callback_answer_names_what_was_expected():
    model, (x, y) = Counting(), fixture()
    with pytest.raises(TypeError, match=r"returned a torch.float32 tensor shaped \(8,\); expected a bool tensor "
                                        r"shaped \(8,\) or None"):
        run_pgd(model, x, y, on_step=lambda a: torch.zeros(8))


def test_correct_without_labels_says_how_to_give_them():
    model, (x, y) = Counting(), fixture()
    probs = torch.softmax(torch.randn(8, 3), 1)
    with pytest.raises(ValueError, match="pass labels=step.y"):
        pgd(model, x, probs, lambda logits, p: (p * logits).sum(1), eps=torch.full((8,), 0.3),
            step_size=torch.full((8,), 0.05), steps=2, on_step=lambda a: a.correct)


def test_without_attack_step_hooks_the_pgd_plugin_passes_no_callback():

    run = tiny_run(["pgd-at"])
    assert run.hooks.attack_step_callback(run, None) is None
    run = tiny_run(["pgd-at", "gairat"])
    assert callable(run.hooks.attack_step_callback(run, None))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host syncs only exist on a GPU")
def test_the_open_loop_does_not_sync_the_host_on_the_gpu():
    model = Counting().cuda()
    x, y = (t.cuda() for t in fixture())
    torch.cuda.set_sync_debug_mode("error")
    try:
        run_pgd(model, x, y, on_step=lambda a: ~a.correct)
        run_pgd(model, x, y)
    finally:
        torch.cuda.set_sync_debug_mode(0)


# --- FAT and GAIRAT compose with the objectives and AWP (the real executable) --------------

TINY = ["--epochs", "1", "--subset", "64", "--set", "data.batch_size=32", "--set", "model.width=4",
        "--set", "attack.steps=3", "--set", "eval.n=16", "--set", "eval.pgd_steps=1"]


def train_cli(tmp_path, *args):
    exe = Path(sys.executable).parent / "advcore"
    out = tmp_path / "run"
    proc = subprocess.run([str(exe), "train", *args, *TINY, "--out", str(out)], capture_output=True, text=True,
                          env=dict(os.environ, ADVCORE_PROGRESS="0", OMP_NUM_THREADS="1"), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("args, metric", [
    (["--plugin", "hat", "--plugin", "fat", "--set", "options.hat.std_epochs=1", "--set", "options.fat.tau=1"],
     "fat.mean_steps"),
    (["--plugin", "trades", "--plugin", "gairat", "--set", "options.gairat.begin_epoch=0",
      "--set", 'options.gairat.terms=["kl"]'], "gairat.mean_kappa"),
    (["--plugin", "gairat", "--plugin", "awp", "--set", "options.gairat.begin_epoch=0"], "gairat.mean_kappa"),
], ids=["hat+fat", "trades+gairat", "gairat+awp"])
def test_fat_and_gairat_train_with_hat_trades_and_awp(tmp_path, args, metric):
    (record,) = train_cli(tmp_path, *args)
    assert 0 <= record[metric] <= 3  # steps taken / steps correct, out of attack.steps = 3
    assert record["train_loss"] > 0


def test_the_fat_walk_through_in_writing_plugins_gives_the_fat_plugins_examples():


    page = (Path(__file__).resolve().parents[1] / "docs" / "writing-plugins.md").read_text()
    section = page.split("## Walk-through: FAT from scratch", 1)[1].split("\n## ", 1)[0]
    module = types.ModuleType("fat_from_the_docs")
    for block in re.findall(r"```python\n(.*?)```", section, re.S):
        exec(block, module.__dict__)  # noqa: S102 - the page's own code
    run = tiny_run(["pgd-at", "fat"], {"fat": {"tau": 1}}, attack={"eps": 0.3, "step_size": 0.05, "steps": 6})
    step = train_step(run, tiny_batch(run, 16), 0, 0)  # a real Step to attack
    objective = run.hooks.attack_objective(run, step)
    run.model.eval()
    torch.manual_seed(3)
    ours = module.advcore_generate_adversarial(run, step, objective)
    torch.manual_seed(3)
    theirs = advcore_fat.advcore_generate_adversarial(run, step, objective)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("plugins", [["pgd-at"], ["pgd-at", "gairat"], ["pgd-at", "fat"]])
def test_a_training_step_makes_k_attack_forwards_and_one_training_forward_with_or_without_watchers(plugins):

    run = tiny_run(plugins, {"gairat": {"begin_epoch": 0}} if "gairat" in plugins else None, attack={"steps": 4})
    calls = []
    run.model.register_forward_pre_hook(lambda module, args: calls.append(module.training))
    train_step(run, tiny_batch(run, 16), 0, 0)
    assert calls == [False] * 4 + [True]  # PGD-4 in eval mode, then the training forward: nothing extra


@pytest.mark.parametrize("args, message", [
    (["--plugin", "fgsm-rs", "--plugin", "gairat", "--set", "options.gairat.begin_epoch=0"],
     "error: gairat got no PGD steps for this batch from adversary 'fgsm-rs'; use an adversary that reports them "
     "(--plugin pgd or --plugin fat)"),
    (["--plugin", "gairat", "--set", "options.gairat.schedule=linear"],
     "error: options.gairat.schedule=linear needs options.gairat.lam_max"),
], ids=["no-steps", "linear"])
def test_gairat_misuse_is_one_line_and_exit_code_1(tmp_path, args, message):
    exe = Path(sys.executable).parent / "advcore"
    proc = subprocess.run([str(exe), "train", *args, *TINY, "--out", str(tmp_path / "run")], capture_output=True,
                          text=True, env=dict(os.environ, ADVCORE_PROGRESS="0", OMP_NUM_THREADS="1"), timeout=600)
    assert proc.returncode == 1  # a problem the user can fix (docs/errors.md#exit-codes)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_attack_step_hook_returning_the_wrong_thing_is_named_with_the_hook():
    from advcore import hookimpl
    from advcore.errors import PluginError
    from advcore.kernel.plugins import Hooks, build_manager

    @hookimpl
    def advcore_attack_step(attack):
        return torch.zeros(4)

    pm = build_manager([])
    pm.register(types.SimpleNamespace(advcore_attack_step=advcore_attack_step), name="bad")
    callback = Hooks(pm).attack_step_callback(None, types.SimpleNamespace(size=4))
    view = AttackStep(0, 1, torch.zeros(4, 2), torch.zeros(4, 2), torch.ones(4, dtype=torch.bool))
    with pytest.raises(PluginError, match=r"advcore_attack_step returned a tensor shaped \(4,\) of torch.float32; expected a bool "
                                          r"tensor shaped \(4,\) or None"):
        callback(view)


def test_plan_shows_gairat_watching_the_steps_of_the_fat_adversary():
    exe = Path(sys.executable).parent / "advcore"
    proc = subprocess.run([str(exe), "plan", "--json", "--plugin", "trades", "--plugin", "fat", "--plugin", "gairat"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["roles"] == {"objective": "trades", "adversary": "fat"}
    steps = shown["per_step"]
    assert steps.index("advcore_generate_adversarial") + 1 == steps.index("advcore_attack_step")
    assert shown["hooks"]["advcore_attack_step"] == ["gairat"]
    assert shown["hooks"]["advcore_sample_weights"] == ["gairat"]
