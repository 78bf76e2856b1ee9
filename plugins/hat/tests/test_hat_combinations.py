"""The two flagship commands: hat + fast-atta and hat + awp."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from advcore.testing import load_checkpoint
from advcore.testing import run_cli
from advcore.testing import tiny_batch, tiny_config, tiny_run
from advcore.testing import train, train_step

FROZEN = {"lr": 1e-12, "weight_decay": 0.0, "momentum": 0.0, "schedule": "constant"}
EPS = 0.1


def plan(*plugins):
    args = ["plan", "--json"] + [a for p in plugins for a in ("--plugin", p)]
    result = run_cli(args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_plan_shows_hat_maximised_by_the_cached_one_step_adversary():
    shown = plan("hat", "fast-atta")
    assert shown["roles"] == {"objective": "hat", "adversary": "fast-atta"}
    assert shown["defaults_added"] == []
    assert shown["hooks"]["advcore_attack_objective"] == ["hat"]
    assert shown["hooks"]["advcore_generate_adversarial"] == ["fast-atta"]
    assert shown["hooks"]["advcore_derive_examples"] == ["hat"]


def test_plan_shows_awp_wrapping_the_update_of_hat():
    shown = plan("hat", "awp")
    assert shown["roles"] == {"objective": "hat", "adversary": "pgd"}
    assert shown["hooks"]["advcore_update"] == ["awp (wrapper)", "advcore.core"]


def test_hat_with_fast_atta_takes_one_cached_step_on_hats_kl(std_checkpoint):
    run = tiny_run(["hat", "fast-atta"], {"hat": {"std_checkpoint": std_checkpoint}}, optim=FROZEN,
                   model={"arch": "resnet18", "width": 8}, attack={"eps": EPS})
    batch = tiny_batch(run, 16)
    delta = run.state["fast-atta.delta"]
    delta[batch.index] = (torch.rand(delta[batch.index].shape) * 2 - 1) * EPS
    run.state["fast-atta.visited"][batch.index] = True
    start = batch.x + delta[batch.index][:, :, 1:9, 1:9]
    model = copy.deepcopy(run.model).eval()
    step = train_step(run, batch, 0, 0)

    with torch.no_grad():
        p_clean = F.softmax(model(batch.x), 1)  # once, in eval mode
    start.requires_grad_(True)
    (g,) = torch.autograd.grad(F.kl_div(F.log_softmax(model(start), 1), p_clean, reduction="sum"), start)
    adv = torch.min(torch.max(start.detach() + 0.5 * EPS * g.sign(), batch.x - EPS), batch.x + EPS).clamp(0, 1)
    assert torch.allclose(step.examples["attack"], adv, atol=1e-6)
    assert torch.allclose(step.examples["helper"], batch.x + 2 * (adv - batch.x), atol=1e-6)
    assert [t.name for t in step.terms] == ["ce_clean", "kl", "ce_helper"]


def _config(std_checkpoint, epochs):
    return tiny_config(["hat", "fast-atta"], {"hat": {"std_checkpoint": std_checkpoint}}, epochs=epochs,
                       optim={"schedule": "constant"}, data={"subset": 64}, eval={"n": 16, "pgd_steps": 1})


def _saved(out):
    manifest, tensors = load_checkpoint(out / "checkpoints" / "last")
    return manifest, tensors


def test_hat_with_fast_atta_cache_changes_and_survives_a_resume(std_checkpoint, tmp_path):
    quiet = dict(log=lambda line: None)
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(_config(std_checkpoint, 2), straight, **quiet)
    train(_config(std_checkpoint, 1), split, **quiet)
    _, first = _saved(split)
    train(_config(std_checkpoint, 2), split, resume=True, **quiet)
    manifest, resumed = _saved(split)
    _, reference = _saved(straight)

    assert manifest["epoch"] == 2
    visited = first["state.fast-atta.visited"]
    assert visited.sum() == 64  # every sample of the subset was visited in epoch 1
    moved = (resumed["state.fast-atta.delta"][visited] - first["state.fast-atta.delta"][visited]).abs().amax((1, 2, 3))
    assert (moved > 0).float().mean() > 0.9  # epoch 2 stepped on from the cached perturbations
    for key, value in reference.items():
        if key.startswith(("model.", "state.")):
            assert torch.equal(resumed[key], value), key


@pytest.mark.parametrize("gamma", [0.5, 1.0])
def test_awp_ascends_hats_full_loss_including_the_helper_term(std_checkpoint, gamma):
    options = {"hat": {"gamma": gamma, "std_checkpoint": std_checkpoint}}
    run = tiny_run(["hat"], options, optim=FROZEN)
    torch.manual_seed(4)
    plain = train_step(run, tiny_batch(run, 16), 0, 0)
    run = tiny_run(["hat", "awp"], options, optim=FROZEN)
    torch.manual_seed(4)
    wrapped = train_step(run, tiny_batch(run, 16), 0, 0)
    assert "ce_helper" in [t.name for t in plain.terms]
    assert wrapped.records["awp.proxy_loss"][0] == pytest.approx(plain.loss.item(), rel=1e-5)
    assert wrapped.loss.item() > plain.loss.item()


@pytest.mark.parametrize("extra", ["fast-atta", "awp"])
def test_flagship_commands_train_from_the_command_line(std_checkpoint, tmp_path, extra):
    out = tmp_path / "run"
    args = ["train", "--plugin", "hat", "--plugin", extra, "--dataset", "digits", "--subset", "64", "--epochs", "1",
            "--out", str(out), "--set", f"options.hat.std_checkpoint={std_checkpoint}", "--set", "model.width=8",
            "--set", "eval.n=16", "--set", "attack.steps=2"]
    result = run_cli(args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert "hat.helper_label_is_y" in metrics
    assert ("fast-atta.first_visits" if extra == "fast-atta" else "awp.proxy_loss") in metrics
