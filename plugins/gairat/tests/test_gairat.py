"""GAIRAT against a hand derivation: kappa from a hand-written PGD loop, weights from the formula."""

import copy
import math
import os

import pytest
import torch
import torch.nn.functional as F

from advcore.errors import ConfigError
from advcore.testing import tiny_batch, tiny_run
from advcore.testing import train_step
from advcore_gairat import Options, gair_weights, lambda_at

os.environ.setdefault("ADVCORE_PROGRESS", "0")
torch.set_num_threads(1)
FROZEN = {"lr": 1e-12, "weight_decay": 0.0, "momentum": 0.0, "schedule": "constant"}
EPS, ALPHA = 0.3, 0.05


def fitted_run(plugins, options=None, steps=8):
    """A run whose model classifies the batch mostly right, so kappa differs between examples."""
    torch.manual_seed(0)
    run = tiny_run(plugins, options, optim=FROZEN, attack={"eps": EPS, "step_size": ALPHA, "steps": steps})
    batch = tiny_batch(run, 16)
    opt = torch.optim.Adam(run.model.parameters(), lr=0.02)
    for _ in range(40):
        opt.zero_grad()
        F.cross_entropy(run.model.train()(batch.x), batch.y).backward()
        opt.step()
    return run, batch


def hand_kappa(model, x, y, start, steps, tau=None):
    """GA_PGD per example: before each step add 1 if still correct; with tau, FAT's early stop too."""
    kappas, outs = [], []
    for i in range(len(y)):
        xi, x_adv, kappa, budget = x[i:i + 1], start[i:i + 1].clone(), 0, tau
        for _ in range(steps):
            x_adv.requires_grad_(True)
            logits = model(x_adv)
            if logits.argmax(1).item() == y[i].item():
                kappa += 1
            elif tau is not None:
                if budget == 0:
                    break
                budget -= 1
            (g,) = torch.autograd.grad(F.cross_entropy(logits, y[i:i + 1]), x_adv)
            x_adv = torch.min(torch.max(x_adv.detach() + ALPHA * g.sign(), xi - EPS), xi + EPS).clamp(0, 1)
        kappas.append(kappa)
        outs.append(x_adv.detach())
    return kappas, torch.cat(outs)


def hand_weights(kappas, steps, lam):
    """(1 + tanh(lambda + 5 (K//2 - kappa) / (K//2))) / 2, scaled so the batch sums to B."""
    h = steps // 2
    raw = [(1 + math.tanh(lam + 5 * (h - k) / h)) / 2 for k in kappas]
    return torch.tensor([r * len(raw) / sum(raw) for r in raw])


def attack_and_reference(plugins, options, steps=8, tau=None):
    run, batch = fitted_run(plugins, options, steps)
    model = copy.deepcopy(run.model).eval()
    torch.manual_seed(7)
    step = train_step(run, batch, 0, 0)
    torch.manual_seed(7)
    start = (batch.x + (torch.rand_like(batch.x) * 2 - 1) * EPS).clamp(0, 1)
    kappas, adv = hand_kappa(model, batch.x, batch.y, start, steps, tau)
    return run, batch, step, kappas, adv


@pytest.mark.parametrize("steps", [8, 5])  # odd K: the code's K // 2, not K / 2
def test_pgd_at_with_gairat_weights_follow_the_hand_formula(steps):
    run, batch, step, kappas, adv = attack_and_reference(["pgd-at", "gairat"], {"gairat": {"begin_epoch": 0}},
                                                         steps)
    assert torch.allclose(step.examples["attack"], adv, atol=1e-5)
    assert run.state["gairat.kappa"][batch.index].tolist() == kappas
    assert len(set(kappas)) >= 3  # a fixture where kappa varies
    w = hand_weights(kappas, steps, -1.0)
    assert torch.allclose(step.weights, w, atol=1e-5)
    with torch.no_grad():
        ce = F.cross_entropy(run.model.train()(step.examples["adv"]), batch.y, reduction="none")
    assert step.loss.item() == pytest.approx((w * ce).mean().item(), rel=1e-5)


def test_the_sigmoid_and_discrete_weights_follow_the_authors_formulas():
    kappa = torch.tensor([0.0, 1.0, 3.0, 7.0, 10.0])
    z = [-0.5 + 5 * (5 - k) / 5 for k in kappa.tolist()]  # K = 10, h = 5, lambda = -0.5
    sig = [1 / (1 + math.exp(-v)) for v in z]
    assert torch.allclose(gair_weights(kappa, 10, -0.5, "sigmoid"), torch.tensor([5 * v / sum(sig) for v in sig]))
    disc = [(11 - k) / 11 for k in kappa.tolist()]
    assert torch.allclose(gair_weights(kappa, 10, -0.5, "discrete"), torch.tensor([5 * v / sum(disc) for v in disc]))


def test_gairat_counts_only_the_steps_fat_lets_an_example_take():
    run, batch, step, kappas, adv = attack_and_reference(["pgd-at", "fat", "gairat"],
                                                         {"gairat": {"begin_epoch": 0}, "fat": {"tau": 1}}, tau=1)
    assert torch.allclose(step.examples["attack"], adv, atol=1e-5)
    assert run.state["gairat.kappa"][batch.index].tolist() == kappas
    assert torch.allclose(step.weights, hand_weights(kappas, 8, -1.0), atol=1e-5)


def test_gair_trades_weights_only_the_kl_term():
    opts = {"gairat": {"begin_epoch": 0, "terms": ["kl"]}, "trades": {"beta": 3.0}}
    run, batch = fitted_run(["trades", "gairat"], opts)
    step = train_step(run, batch, 0, 0)
    w = hand_weights(run.state["gairat.kappa"][batch.index].tolist(), 8, -1.0)
    with torch.no_grad():
        clean, advl = run.model.train()(batch.x), run.model(step.examples["adv"])
    kl = (F.softmax(clean, 1) * (F.log_softmax(clean, 1) - F.log_softmax(advl, 1))).sum(1)
    expected = F.cross_entropy(clean, batch.y) + 3.0 * (w * kl).sum() / w.sum()
    assert step.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert not torch.allclose(w, torch.ones_like(w), atol=1e-2)


def test_burn_in_epochs_leave_the_weights_at_one_and_the_schedule_follows_the_authors():
    run, batch = fitted_run(["pgd-at", "gairat"], {"gairat": {"begin_epoch": 2}})
    assert train_step(run, batch, 1, 0).weights is None
    assert train_step(run, batch, 2, 0).weights is not None
    half = Options()  # begin_epoch none: half the run (authors: 60 of 120)
    assert [lambda_at(half, e, 120) for e in (59, 60)] == [math.inf, -1.0]
    assert [lambda_at(half, e, 9) for e in (3, 4)] == [math.inf, -1.0]
    fixed = Options(lam=-1.0, begin_epoch=60)
    assert [lambda_at(fixed, e, 120) for e in (59, 60, 119)] == [math.inf, -1.0, -1.0]
    linear = Options(lam=-1.0, lam_max=2.0, schedule="linear", begin_epoch=60)
    assert lambda_at(linear, 59, 120) == 2.0
    assert lambda_at(linear, 90, 120) == pytest.approx(2.0 - 0.75 * 3.0)


def test_a_term_the_objective_lacks_is_named_with_the_ones_it_has():
    run, batch = fitted_run(["pgd-at", "gairat"], {"gairat": {"begin_epoch": 0, "terms": ["kl"]}})
    with pytest.raises(ConfigError, match=r"options\.gairat\.terms names kl, but this objective's loss terms are"):
        train_step(run, batch, 0, 0)


def test_an_adversary_that_reports_no_steps_is_named():
    run, batch = fitted_run(["pgd-at", "fgsm-rs", "gairat"], {"gairat": {"begin_epoch": 0}})
    with pytest.raises(ConfigError, match="no PGD steps for this batch from adversary 'fgsm-rs'.*--plugin pgd"):
        train_step(run, batch, 0, 0)


def test_an_objective_without_adversarial_examples_is_named():
    run, batch = fitted_run(["standard", "gairat"], {"gairat": {"begin_epoch": 0}})
    with pytest.raises(ConfigError, match="objective 'standard' makes no adversarial examples.*--plugin pgd-at"):
        train_step(run, batch, 0, 0)


def test_a_finite_lam_max_does_not_weight_the_burn_in_epochs():
    run, batch = fitted_run(["pgd-at", "gairat"], {"gairat": {"begin_epoch": 2, "lam_max": 1.0,
                                                              "schedule": "linear"}})
    assert train_step(run, batch, 1, 0).weights is None
    assert train_step(run, batch, 2, 0).weights is not None


def test_linear_without_lam_max_says_what_to_set():
    with pytest.raises(ConfigError, match=r"schedule=linear needs options\.gairat\.lam_max"):
        tiny_run(["gairat"], {"gairat": {"schedule": "linear"}})
