"""FAT against a hand-written early-stopped PGD (the authors' earlystop.py rules), per sample."""

import copy
import os

import pytest
import torch
import torch.nn.functional as F

from advcore.errors import ConfigError
from advcore.testing import tiny_batch, tiny_run
from advcore.testing import train_step

os.environ.setdefault("ADVCORE_PROGRESS", "0")
torch.set_num_threads(1)
FROZEN = {"lr": 1e-12, "weight_decay": 0.0, "momentum": 0.0, "schedule": "constant"}
EPS, ALPHA, K = 0.3, 0.05, 8


def fitted_run(plugins, options=None):
    """A run whose model classifies the batch mostly right, so examples break at different steps."""
    torch.manual_seed(0)
    run = tiny_run(plugins, options, optim=FROZEN, attack={"eps": EPS, "step_size": ALPHA, "steps": K})
    batch = tiny_batch(run, 16)
    opt = torch.optim.Adam(run.model.parameters(), lr=0.02)
    for _ in range(40):
        opt.zero_grad()
        F.cross_entropy(run.model.train()(batch.x), batch.y).backward()
        opt.step()
    return run, batch


def early_stopped_pgd(model, x, y, start, tau, loss=None):
    """Alg. 1 of FAT written out per example: classify, maybe stop, else one signed step on ``loss``."""
    loss = loss or (lambda logits, i: F.cross_entropy(logits, y[i:i + 1]))
    out, steps = [], []
    for i in range(len(y)):
        xi, x_adv, budget, taken = x[i:i + 1], start[i:i + 1].clone(), tau, 0
        for _ in range(K):
            x_adv.requires_grad_(True)
            logits = model(x_adv)
            if logits.argmax(1).item() != y[i].item():
                if budget == 0:
                    break
                budget -= 1
            (g,) = torch.autograd.grad(loss(logits, i), x_adv)
            x_adv = torch.min(torch.max(x_adv.detach() + ALPHA * g.sign(), xi - EPS), xi + EPS).clamp(0, 1)
            taken += 1
        out.append(x_adv.detach())
        steps.append(taken)
    return torch.cat(out), steps


@pytest.mark.parametrize("tau", [0, 1, 3])
def test_fat_matches_a_hand_written_early_stopped_pgd(tau):
    run, batch = fitted_run(["pgd-at", "fat"], {"fat": {"tau": tau}})
    model = copy.deepcopy(run.model).eval()
    torch.manual_seed(7)
    step = train_step(run, batch, 0, 0)
    torch.manual_seed(7)
    start = (batch.x + (torch.rand_like(batch.x) * 2 - 1) * EPS).clamp(0, 1)  # Madry's uniform start
    expected, steps = early_stopped_pgd(model, batch.x, batch.y, start, tau)
    assert torch.allclose(step.examples["attack"], expected, atol=1e-5)
    assert run.state["fat.steps"][batch.index].tolist() == steps
    assert len(set(steps)) >= 3  # examples stopped at different steps: the fixture can tell the rules apart
    assert min(steps) < K


def test_fat_for_trades_climbs_the_kl_from_a_gaussian_start_and_stops_on_the_true_label():
    run, batch = fitted_run(["trades", "fat"], {"fat": {"tau": 0}})
    model = copy.deepcopy(run.model).eval()
    torch.manual_seed(7)
    step = train_step(run, batch, 0, 0)
    torch.manual_seed(7)
    start = batch.x + 0.001 * torch.randn_like(batch.x)  # TRADES' start
    with torch.no_grad():
        p_clean = F.softmax(model(batch.x), 1)
    kl = lambda logits, i: F.kl_div(F.log_softmax(logits, 1), p_clean[i:i + 1], reduction="sum")  # noqa: E731
    expected, steps = early_stopped_pgd(model, batch.x, batch.y, start, 0, kl)
    assert torch.allclose(step.examples["attack"], expected.clamp(0, 1), atol=1e-5)
    assert run.state["fat.steps"][batch.index].tolist() == steps
    assert len(set(steps)) >= 2


def test_tau_0_stops_earlier_than_plain_pgd_and_tau_grows_with_the_epochs():
    run, batch = fitted_run(["pgd-at", "fat"], {"fat": {"tau": 0, "tau_epochs": [1, 3]}})
    from advcore_fat import tau_at

    opts = run.options["fat"]
    assert [tau_at(opts, e) for e in range(5)] == [0, 1, 1, 2, 2]
    torch.manual_seed(7)
    train_step(run, batch, 0, 0)
    assert run.state["fat.steps"][batch.index].mean().item() < K


def test_a_negative_tau_names_the_option():
    with pytest.raises(ConfigError, match=r"options\.fat\.tau"):
        tiny_run(["fat"], {"fat": {"tau": -1}})
