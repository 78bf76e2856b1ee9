"""reweight: weights = p_y(adv) normalised over the batch, applied to every loss term."""

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


def one_step(plugins, options=None, epoch=0, **overrides):
    """One step with lr ~ 0 on a model whose logits are spread out, so weights differ clearly."""
    torch.manual_seed(0)
    options = dict(options or {})
    options["reweight"] = {"warmup": 0, **options.get("reweight", {})}  # the tests start at epoch 0
    run = tiny_run(plugins, options, optim=FROZEN, **overrides)
    with torch.no_grad():
        run.model.head.weight.mul_(40)
    step = train_step(run, tiny_batch(run, 16), epoch, 0)
    return run, step


def forward(run, x):
    with torch.no_grad():
        return run.model.train()(x)


def reference_weights(logits, y):
    p = torch.softmax(logits, 1)[torch.arange(len(y)), y]
    return p / p.sum()


def test_weights_sum_to_one_and_follow_the_adversarial_true_label_probability():
    run, step = one_step(["pgd-at", "reweight"])
    adv = forward(run, step.examples["adv"])
    w = reference_weights(adv, step.y)
    assert step.weights.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(step.weights, w, atol=1e-6)
    assert w.max() > 3 * w.min()  # not uniform: the test can tell
    ce = F.cross_entropy(adv, step.y, reduction="none")
    assert step.loss.item() == pytest.approx((w * ce).sum().item(), rel=1e-5)
    assert step.loss.item() < ce.mean().item()  # hard (high-loss) samples count less


def test_nat_prob_uses_the_clean_probability():
    run, step = one_step(["pgd-at", "reweight"], {"reweight": {"mode": "nat_prob"}})
    w = reference_weights(forward(run, step.x), step.y)
    assert torch.allclose(step.weights, w, atol=1e-6)
    assert not torch.allclose(step.weights, reference_weights(forward(run, step.examples["adv"]), step.y), atol=1e-3)


def test_warmup_epochs_use_uniform_weights():
    run, step = one_step(["pgd-at", "reweight"], {"reweight": {"warmup": 2}}, epoch=1)
    assert step.weights is None
    adv = forward(run, step.examples["adv"])
    assert step.loss.item() == pytest.approx(F.cross_entropy(adv, step.y).item(), rel=1e-5)
    run, step = one_step(["pgd-at", "reweight"], {"reweight": {"warmup": 2}}, epoch=2)
    assert torch.allclose(step.weights, reference_weights(forward(run, step.examples["adv"]), step.y), atol=1e-6)


def test_weights_apply_to_every_term_of_another_objective():
    run, step = one_step(["trades", "reweight"], {"trades": {"beta": 2.0}})
    clean, adv = forward(run, step.x), forward(run, step.examples["adv"])
    w = reference_weights(adv, step.y)
    kl = (F.softmax(clean, 1) * (F.log_softmax(clean, 1) - F.log_softmax(adv, 1))).sum(1)
    expected = (w * F.cross_entropy(clean, step.y, reduction="none")).sum() + 2.0 * (w * kl).sum()
    assert step.loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("mode", ["comp_prob", "max_prob", "comp_max_prob", "comp_nat_prob"])
def test_the_authors_code_modes(mode):
    """adv_fast.py: comp_* = 1 - p, max_prob = max_k p_k (adversarial unless nat)."""
    run, step = one_step(["pgd-at", "reweight"], {"reweight": {"mode": mode}})
    probs = torch.softmax(forward(run, step.x if "nat" in mode else step.examples["adv"]), 1)
    p = probs.max(1).values if "max" in mode else probs[torch.arange(step.size), step.y]
    p = 1 - p if mode.startswith("comp") else p
    assert torch.allclose(step.weights, p / p.sum(), atol=1e-6)


def test_default_warmup_is_five_epochs():
    torch.manual_seed(0)
    run = tiny_run(["pgd-at", "reweight"], optim=FROZEN)
    assert run.options["reweight"].warmup == 5
    assert train_step(run, tiny_batch(run, 16), 4, 0).weights is None
    assert train_step(run, tiny_batch(run, 16), 5, 0).weights is not None


def test_a_bad_mode_names_the_option_and_the_allowed_values():
    with pytest.raises(ConfigError, match=r"options\.reweight\.mode: invalid value 'adv'.*'prob'.*'nat_prob'"):
        tiny_run(["reweight"], {"reweight": {"mode": "adv"}})
