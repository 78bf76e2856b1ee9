"""AWP: the update against a hand-written reference, exact removal, zero size, any objective."""

import copy

import pytest
import torch
import torch.nn.functional as F

from advcore.testing import tiny_batch, tiny_run
from advcore.testing import train_step

ARCH = {"arch": "resnet18", "width": 8}  # has BatchNorm: the proxy must not touch the model's statistics
SGD = {"lr": 0.1, "weight_decay": 5e-4, "momentum": 0.0, "schedule": "constant"}


def steps(plugins, options=None, n=2, seed=3, **overrides):
    run = tiny_run(plugins, options, **overrides)
    torch.manual_seed(seed)
    out = [train_step(run, tiny_batch(run, 16, start=16 * i), 0, i) for i in range(n)]
    return run, out


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_zero_perturbation_leaves_training_identical_to_the_wrapped_objective():
    plain, plain_steps = steps(["pgd-at"], optim=SGD, model=ARCH)
    awp, awp_steps = steps(["pgd-at", "awp"], {"awp": {"gamma": 0.0}}, optim=SGD, model=ARCH)
    assert "awp.proxy_loss" in awp_steps[0].records  # the proxy really ran
    assert [s.loss.item() for s in plain_steps] == [s.loss.item() for s in awp_steps]
    for (name, a), b in zip(state(plain.model).items(), state(awp.model).values()):
        assert torch.equal(a, b), name  # weights and BatchNorm statistics


def test_update_is_taken_at_the_perturbed_weights_and_the_perturbation_removed_after():
    gamma = 0.05
    run = tiny_run(["pgd-at", "awp"], {"awp": {"gamma": gamma}}, optim=SGD, model=ARCH)
    model0 = copy.deepcopy(run.model)
    batch = tiny_batch(run, 16)
    step = train_step(run, batch, 0, 0)
    adv, y = step.examples["adv"], batch.y

    # reference (Wu et al. 2020, AT-AWP): ascent direction on a copy in train mode ...
    proxy = copy.deepcopy(model0).train()
    loss = F.cross_entropy(proxy(adv), y)
    names = [n for n, p in proxy.named_parameters() if p.dim() > 1 and "weight" in n]
    grads = dict(zip(names, torch.autograd.grad(loss, [dict(proxy.named_parameters())[n] for n in names])))
    w0 = dict(model0.named_parameters())
    v = {n: w0[n].detach().norm() * grads[n] / grads[n].norm() for n in names}
    # ... the SGD step with weight decay at w + gamma*v, then w - lr*(grad + wd*(w + gamma v))
    perturbed = copy.deepcopy(model0).train()
    with torch.no_grad():
        for n, p in perturbed.named_parameters():
            if n in v:
                p.add_(gamma * v[n])
    wp = dict(perturbed.named_parameters())
    g = dict(zip(wp, torch.autograd.grad(F.cross_entropy(perturbed(adv), y), list(wp.values()))))
    for n, p in run.model.named_parameters():
        expected = wp[n] - 0.1 * (g[n] + 5e-4 * wp[n]) - (gamma * v[n] if n in v else 0)
        assert torch.allclose(p, expected.detach(), atol=1e-6), n
    for n, b in run.model.named_buffers():  # one train-mode forward at the perturbed weights, none from the proxy
        assert torch.allclose(b.float(), dict(perturbed.named_buffers())[n].float(), atol=1e-6), n
    assert step.loss.item() == pytest.approx(F.cross_entropy(perturbed(adv), y).item(), rel=1e-5)
    assert step.records["awp.proxy_loss"][0] == pytest.approx(loss.item(), rel=1e-5)

    current = copy.deepcopy(run.model).train()  # next step: the proxy is re-synced to the updated weights
    nxt = train_step(run, tiny_batch(run, 16, start=16), 0, 1)
    with torch.no_grad():
        resynced = F.cross_entropy(current(nxt.examples["adv"]), nxt.y)
    assert nxt.records["awp.proxy_loss"][0] == pytest.approx(resynced.item(), rel=1e-5)


def test_no_perturbation_is_left_in_the_weights():
    frozen = {"lr": 1e-12, "weight_decay": 0.0, "momentum": 0.0, "schedule": "constant"}
    run = tiny_run(["trades", "awp"], {"awp": {"gamma": 0.5}}, optim=frozen)
    before = state(run.model)
    step = train_step(run, tiny_batch(run, 16), 0, 0)
    for (name, a), b in zip(before.items(), state(run.model).values()):
        assert torch.allclose(a, b, atol=1e-6), name
    run.model.train()
    with torch.no_grad():  # the loss was measured at perturbed weights, not at these
        clean = run.model(step.x)
        kl = F.kl_div(F.log_softmax(run.model(step.examples["adv"]), 1), F.softmax(clean, 1), reduction="batchmean")
        unperturbed = F.cross_entropy(clean, step.y) + 6.0 * kl
    assert step.loss.item() > unperturbed.item() + 1e-3


@pytest.mark.parametrize("objective", ["pgd-at", "trades", "mart"])
def test_the_proxy_ascends_the_wrapped_objectives_own_loss(objective):
    frozen = {"lr": 1e-12, "weight_decay": 0.0, "momentum": 0.0, "schedule": "constant"}
    _, (plain,) = steps([objective], optim=frozen, n=1)
    _, (wrapped,) = steps([objective, "awp"], optim=frozen, n=1)
    assert wrapped.records["awp.proxy_loss"][0] == pytest.approx(plain.loss.item(), rel=1e-5)
    assert wrapped.loss.item() > plain.loss.item()  # the weights moved uphill for this objective


def test_warmup_epochs_train_without_perturbation():
    run = tiny_run(["pgd-at", "awp"], {"awp": {"warmup": 1}}, optim=SGD)
    batch = tiny_batch(run, 16)
    assert "awp.proxy_loss" not in train_step(run, batch, 0, 0).records
    assert "awp.proxy_loss" in train_step(run, batch, 1, 0).records
