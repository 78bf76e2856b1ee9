"""adaptive-targets: t <- rho t + (1 - rho) softmax(f(x_adv)); target beta onehot + (1 - beta) t."""

import copy
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from advcore import load_config
from advcore import SampleState
from advcore.testing import tiny_batch, tiny_config, tiny_run
from advcore.testing import lr_at, train, train_step
from advcore.errors import PluginError
from advcore_adaptive_targets import STARTED, TARGET, update_targets

os.environ.setdefault("ADVCORE_PROGRESS", "0")
torch.set_num_threads(1)
FROZEN = {"lr": 1e-12, "weight_decay": 0.0, "momentum": 0.0, "schedule": "constant"}
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "fast-at-004.toml"


def onehot(y, k=10):
    return torch.eye(k)[y]


def test_update_on_fixed_tensors_starts_from_one_hot_then_averages():
    state = SampleState(6)
    y = torch.tensor([2, 0, 2])
    index = torch.tensor([4, 1, 4])  # rows 0 and 2: two views of sample 4
    p = torch.tensor([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25], [0.3, 0.2, 0.5]])
    first = update_targets(state, index, y, p, rho=0.9)
    t4 = 0.9 * torch.tensor([0.0, 0.0, 1.0]) + 0.1 * torch.tensor([0.2, 0.2, 0.6])  # views averaged
    t1 = 0.9 * torch.tensor([1.0, 0.0, 0.0]) + 0.1 * torch.tensor([0.5, 0.25, 0.25])
    assert torch.allclose(first, torch.stack([t4, t1, t4]))
    assert state[STARTED].tolist() == [False, True, False, False, True, False]
    assert state[TARGET][0].abs().sum() == 0  # untouched rows keep no target
    q = torch.tensor([[0.0, 1.0, 0.0]])
    second = update_targets(state, torch.tensor([1]), torch.tensor([0]), q, rho=0.9)
    assert torch.allclose(second[0], 0.9 * t1 + 0.1 * q[0])
    assert torch.allclose(state[TARGET][4], t4)


def test_distinct_indices_skip_the_grouping_with_the_same_numbers():
    """One view in one process draws each index once per batch: the shortcut must change nothing."""
    g = torch.Generator().manual_seed(3)
    index = torch.randperm(50, generator=g)[:16]
    y = torch.randint(0, 10, (16,), generator=g)
    grouped, direct = SampleState(50), SampleState(50)
    for visit in range(3):  # a first visit (one-hot start), then two moving-average steps
        p = torch.softmax(torch.randn(16, 10, generator=g), 1)
        a = update_targets(grouped, index, y, p, rho=0.9)
        b = update_targets(direct, index, y, p, rho=0.9, distinct=True)
        assert torch.equal(a, b), visit
    assert torch.equal(grouped[TARGET], direct[TARGET]) and torch.equal(grouped[STARTED], direct[STARTED])


def spread_run(plugins, options=None, **overrides):
    torch.manual_seed(0)
    run = tiny_run(plugins, options, optim=FROZEN, **overrides)
    with torch.no_grad():
        run.model.head.weight.mul_(20)
    return run


def test_step_targets_mix_the_moving_average_of_the_adversarial_output():
    run = spread_run(["pgd-at", "adaptive-targets"], {"adaptive-targets": {"rho": 0.7, "beta": 0.2, "warmup": 2}})
    batch = tiny_batch(run, 16)
    step = train_step(run, batch, 1, 0)  # warm-up: one-hot targets, state untouched
    assert step.targets == {}
    assert STARTED not in run.state or not run.state[STARTED].any()
    before = copy.deepcopy(run.model).train()
    step = train_step(run, batch, 2, 0)
    with torch.no_grad():
        logits = before(step.examples["adv"])
    y1 = onehot(step.y)
    t = 0.7 * y1 + 0.3 * F.softmax(logits, 1)  # first post-warm-up visit starts from one-hot
    target = 0.2 * y1 + 0.8 * t
    assert torch.allclose(run.state[TARGET][step.index], t, atol=1e-6)
    assert torch.allclose(step.targets["adv"], target, atol=1e-6)
    assert torch.allclose(step.targets["clean"], target, atol=1e-6)
    expected = -(target * F.log_softmax(logits, 1)).sum(1).mean()
    assert step.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    before = copy.deepcopy(run.model).train()
    step = train_step(run, batch, 3, 0)
    with torch.no_grad():
        t2 = 0.7 * t + 0.3 * F.softmax(before(step.examples["adv"]), 1)
    assert torch.allclose(run.state[TARGET][step.index], t2, atol=1e-6)


def test_beta_one_is_plain_one_hot_training():
    def params(plugins, options):
        torch.manual_seed(0)
        run = tiny_run(plugins, options, optim={"lr": 0.1, "schedule": "constant"})
        for b in range(3):
            train_step(run, tiny_batch(run, 16, start=16 * b), 0, b)
        return torch.cat([p.detach().flatten() for p in run.model.parameters()])

    plain = params(["pgd-at"], None)
    same = params(["pgd-at", "adaptive-targets"], {"adaptive-targets": {"beta": 1.0, "warmup": 0}})
    adaptive = params(["pgd-at", "adaptive-targets"], {"adaptive-targets": {"beta": 0.0, "warmup": 0}})
    assert torch.allclose(plain, same, atol=1e-5)
    assert not torch.allclose(plain, adaptive, atol=1e-3)


def test_clean_source_averages_the_clean_output_and_kl_adds_the_clean_target_term():
    run = spread_run(["pgd-at", "adaptive-targets"],
                     {"adaptive-targets": {"rho": 0.5, "beta": 0.0, "warmup": 0, "source": "clean", "kl": 6.0}})
    before = copy.deepcopy(run.model).train()
    step = train_step(run, tiny_batch(run, 16), 0, 0)
    with torch.no_grad():
        clean, adv = before(step.x), before(step.examples["adv"])
    t = 0.5 * onehot(step.y) + 0.5 * F.softmax(clean, 1)
    assert torch.allclose(step.targets["adv"], t, atol=1e-6)
    kl = (F.softmax(clean, 1) * (F.log_softmax(clean, 1) - F.log_softmax(adv, 1))).sum(1)
    expected = -(t * F.log_softmax(adv, 1)).sum(1).mean() + 6.0 * kl.mean()
    assert step.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def step_and_papers_loss(run):
    """One training step, and Alg. 1's loss sum_i w_i CE(f(x'_i), T_i) / sum_i w_i computed by hand
    from the model before the step: first visit, beta 0.1, rho 0.9, true-label weights."""
    before = copy.deepcopy(run.model).train()
    step = train_step(run, tiny_batch(run, 16), 0, 0)
    with torch.no_grad():
        logits = before(step.examples["adv"])
    p = F.softmax(logits, 1)
    target = 0.1 * onehot(step.y) + 0.9 * (0.9 * onehot(step.y) + 0.1 * p)
    w = p[torch.arange(16), step.y]
    return step, (w * -(target * F.log_softmax(logits, 1)).sum(1)).sum() / w.sum()


def test_with_reweighting_on_a_one_step_adversary_the_loss_is_the_papers():
    """Alg. 1's loss sum_i w_i CE(f(x'_i), T_i) / sum_i w_i, here with PGD-1 as the one-step adversary."""
    run = spread_run(["pgd-at", "pgd", "reweight", "adaptive-targets"],
                     {"adaptive-targets": {"warmup": 0}, "reweight": {"warmup": 0}}, attack={"steps": 1})
    step, expected = step_and_papers_loss(run)
    assert step.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_fast_atta_reweight_adaptive_targets_compose():
    pytest.importorskip("advcore_fast_atta")
    run = spread_run(["fast-atta", "reweight", "adaptive-targets"],
                     {"adaptive-targets": {"warmup": 0}, "reweight": {"warmup": 0}})
    step, expected = step_and_papers_loss(run)
    assert step.loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert run.state[STARTED][step.index].all()


def test_targets_survive_resume(tmp_path):
    cfg = tiny_config(["pgd-at", "adaptive-targets"], {"adaptive-targets": {"warmup": 1}}, epochs=3,
                      deterministic=True, optim={"schedule": "constant"}, data={"subset": 96, "batch_size": 32},
                      eval={"n": 16, "pgd_steps": 1}, attack={"steps": 1})
    train(cfg, tmp_path / "straight", log=lambda line: None)

    class Stop(Exception):
        pass

    def stop_after_two(line):
        if line.startswith("epoch 2/"):
            raise Stop

    with pytest.raises(Stop):
        train(cfg, tmp_path / "resumed", log=stop_after_two)
    train(cfg, tmp_path / "resumed", resume=True, log=lambda line: None)
    from advcore.testing import load_checkpoint

    a = load_checkpoint(tmp_path / "straight")[1]
    b = load_checkpoint(tmp_path / "resumed")[1]
    assert b[f"state.{STARTED}"].sum() == 96
    assert torch.equal(a[f"state.{TARGET}"], b[f"state.{TARGET}"])


def test_example_config_is_the_papers_38_epoch_schedule():
    cfg = load_config(EXAMPLE)
    assert cfg.plugins == ["fast-atta", "reweight", "adaptive-targets"]
    assert (cfg.epochs, cfg.data.batch_size, cfg.optim.weight_decay) == (38, 128, 5e-4)
    assert cfg.attack.step_size == pytest.approx(4 / 255) and cfg.attack.eps == pytest.approx(8 / 255)
    assert cfg.attack.model_mode == "train"  # the 004 code attacks and trains in train mode
    lrs = [lr_at(cfg, e + 0.5) for e in range(38)]
    assert lrs == pytest.approx([0.1] * 30 + [0.01] * 6 + [0.001] * 2)
    assert cfg.options["adaptive-targets"] == {"rho": 0.9, "beta": 0.1, "warmup": 5}


def test_attack_start_source_averages_the_cached_pre_step_output_as_the_004_code():
    """adv_fast.py L95-108: the target moves towards softmax(f(x + cached delta)), before the FGSM step."""
    run = spread_run(["fast-atta", "adaptive-targets"],
                     {"adaptive-targets": {"rho": 0.7, "beta": 0.2, "warmup": 0, "source": "attack_start"}})
    before = copy.deepcopy(run.model).train()
    step = train_step(run, tiny_batch(run, 16), 0, 0)
    start, adv = step.examples["attack_start"], step.examples["adv"]
    assert not torch.equal(start, adv)  # the step moved: the two sources differ
    with torch.no_grad():
        t = 0.7 * onehot(step.y) + 0.3 * F.softmax(before(start), 1)
        t_adv = 0.7 * onehot(step.y) + 0.3 * F.softmax(before(adv), 1)
    assert torch.allclose(run.state[TARGET][step.index], t, atol=1e-6)
    assert not torch.allclose(t, t_adv, atol=1e-4)


def test_attack_start_source_without_fast_atta_is_one_line():
    run = spread_run(["pgd-at", "adaptive-targets"], {"adaptive-targets": {"warmup": 0, "source": "attack_start"}})
    with pytest.raises(PluginError, match="source=attack_start needs the fast-atta adversary"):
        train_step(run, tiny_batch(run, 8), 0, 0)
