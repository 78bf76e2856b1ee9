"""Cons-AT's loss against the authors' formula (CE over 2B rows + lam * batchmean JS_T)."""

import os

import pytest
import torch
import torch.nn.functional as F

from advcore.testing import tiny_batch, tiny_run
from advcore.testing import train_step

os.environ.setdefault("ADVCORE_PROGRESS", "0")
torch.set_num_threads(1)


def one_step(options=None, size=8):
    run = tiny_run(["cons-at"], options, optim={"lr": 1e-12, "momentum": 0.0, "weight_decay": 0.0,
                                                 "schedule": "constant"}, attack={"steps": 2})
    batch = tiny_batch(run, size)
    batch.views[0].x = (batch.x + 0.05 * torch.randn_like(batch.x)).clamp(0, 1)  # a different second view
    return run, train_step(run, batch, 0, 0)


def reference_js(z1, z2, temperature):
    """The authors' _jensen_shannon_div: KL of each side to the clamped mean, batchmean."""
    p, q = F.softmax(z1 / temperature, 1), F.softmax(z2 / temperature, 1)
    log_m = (0.5 * (p + q)).clamp(min=1e-8).log()
    return 0.5 * (F.kl_div(log_m, p, reduction="batchmean") + F.kl_div(log_m, q, reduction="batchmean"))


@pytest.mark.parametrize("lam,temperature", [(1.0, 0.5), (2.0, 1.0)])
def test_loss_is_ce_on_both_views_plus_lam_js(lam, temperature):
    run, step = one_step({"cons-at": {"lam": lam, "temperature": temperature}})
    b = 8
    assert step.size == 2 * b and torch.equal(step.index[:b], step.index[b:])
    assert torch.equal(step.view, torch.tensor([0] * b + [1] * b))
    with torch.no_grad():
        run.model.train()
        z = run.model(step.examples["adv"])
        expected = F.cross_entropy(z, step.y) + lam * reference_js(z[:b], z[b:], temperature)
    assert step.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    js = next(t for t in step.terms if t.name == "consistency_js")
    assert js.mask[:b].all() and not js.mask[b:].any()
    assert js.values[:b].mean().item() > 0


def test_attack_is_uniform_start_ce_in_eval_mode_inside_the_budget():
    run, step = one_step()
    delta = step.examples["adv"] - step.x
    assert delta.abs().max().item() <= run.eps + 1e-6
    assert not torch.equal(step.examples["adv"], step.x)
    assert run.hooks.attack_objective(run, step).mode == "eval"


def test_hook_contracts_hold():
    from advcore.testing import check_plugin

    check_plugin("cons-at", attack={"steps": 1})
