"""Each baseline objective's loss against an independent computation on a fixed batch."""

import pytest
import torch
import torch.nn.functional as F

from advcore.testing import tiny_batch, tiny_run
from advcore.engine import train_step


def one_step(plugins, options=None, **overrides):
    """Run one step with lr=0 so the model is unchanged and the loss can be recomputed."""
    run = tiny_run(plugins, options, optim={"lr": 1e-12, "weight_decay": 0.0, "momentum": 0.0,
                                             "schedule": "constant"}, **overrides)
    step = train_step(run, tiny_batch(run, 16), 0, 0)
    run.model.train()
    return run, step


def logits(run, x):
    with torch.no_grad():
        return run.model(x)


def test_trades_with_beta_zero_is_clean_ce():
    run, step = one_step(["trades"], {"trades": {"beta": 0.0}})
    expected = F.cross_entropy(logits(run, step.x), step.y)
    assert step.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_trades_loss_is_ce_plus_beta_kl_clean_to_adv():
    run, step = one_step(["trades"], {"trades": {"beta": 3.0}})
    clean, adv = logits(run, step.x), logits(run, step.examples["adv"])
    kl = F.kl_div(F.log_softmax(adv, 1), F.softmax(clean, 1), reduction="batchmean")
    expected = F.cross_entropy(clean, step.y) + 3.0 * kl
    assert step.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert kl.item() > 0  # the attack moved away from x (a zero start would not)


def test_pgd_at_loss_is_ce_on_adversarial_examples():
    run, step = one_step(["pgd-at"])
    expected = F.cross_entropy(logits(run, step.examples["adv"]), step.y)
    assert step.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert not torch.equal(step.examples["adv"], step.x)


def test_mart_loss_matches_reference_formula():
    run, step = one_step(["mart"], {"mart": {"beta": 5.0}})
    clean, adv = logits(run, step.x), logits(run, step.examples["adv"])
    p, q = F.softmax(clean, 1), F.softmax(adv, 1)
    y = step.y
    q_wrong = []
    for i in range(len(y)):
        order = q[i].argsort(descending=True)
        wrong = order[1] if order[0] == y[i] else order[0]
        q_wrong.append(q[i, wrong])
    q_wrong = torch.stack(q_wrong)
    bce = F.cross_entropy(adv, y) + (-torch.log(1.0001 - q_wrong + 1e-12)).mean()
    kl = (p * (torch.log(p + 1e-12) - torch.log(q + 1e-12))).sum(1)
    kl = (kl * (1.0000001 - p[torch.arange(len(y)), y])).mean()
    assert step.loss.item() == pytest.approx((bce + 5.0 * kl).item(), rel=1e-5)


def test_alp_loss_matches_reference_formula():
    run, step = one_step(["alp"], {"alp": {"beta": 0.7}})
    clean, adv = logits(run, step.x), logits(run, step.examples["adv"])
    expected = 0.5 * F.cross_entropy(clean, step.y) + 0.5 * F.cross_entropy(adv, step.y) \
        + 0.7 * F.mse_loss(clean, adv)
    assert step.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_standard_training_makes_no_adversarial_examples():
    run, step = one_step(["standard"])
    assert "adv" not in step.examples
    assert step.loss.item() == pytest.approx(F.cross_entropy(logits(run, step.x), step.y).item(), rel=1e-5)


@pytest.mark.parametrize("adversary", ["pgd", "fgsm-rs", "free"])
@pytest.mark.parametrize("objective", ["pgd-at", "trades"])
def test_adversaries_stay_in_the_eps_ball_and_input_range(adversary, objective):
    run, step = one_step([objective, adversary], attack={"eps": 0.1, "steps": 3})
    delta = step.examples["adv"].detach() - step.x
    assert delta.abs().max().item() <= 0.1 + 1e-6
    assert step.examples["adv"].min() >= 0 and step.examples["adv"].max() <= 1


def test_free_replays_each_batch_and_carries_delta():
    run, step = one_step(["pgd-at", "free"], {"free": {"replays": 3}}, attack={"eps": 0.1})
    assert run.global_step == 3  # three updates for one batch
    delta = run.stash["free"]
    assert delta.abs().max() > 0 and delta.abs().max() <= 0.1 + 1e-6


def test_fgsm_rs_is_one_signed_step_of_1_25_eps_from_a_uniform_start():
    run = tiny_run(["pgd-at", "fgsm-rs"], attack={"eps": 0.05}, optim={"lr": 1e-12, "momentum": 0.0})
    batch = tiny_batch(run, 16)
    model_before = {k: v.clone() for k, v in run.model.state_dict().items()}
    torch.manual_seed(5)
    step = train_step(run, batch, 0, 0)
    # independent recomputation with the same random start
    run.model.load_state_dict(model_before)
    run.model.eval()
    torch.manual_seed(5)
    x = batch.x
    start = (x + (torch.rand_like(x) * 2 - 1) * 0.05).clamp(0, 1).requires_grad_(True)
    F.cross_entropy(run.model(start), batch.y, reduction="sum").backward()
    expected = torch.min(torch.max(start + 1.25 * 0.05 * start.grad.sign(), x - 0.05), x + 0.05).clamp(0, 1)
    assert torch.allclose(step.examples["adv"], expected.detach(), atol=1e-6)
