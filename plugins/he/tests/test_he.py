"""HE against formulas written out here from the paper (Eq. 4-6, Sec. 3.5) and notes §6."""

import copy
import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import advcore_he
from advcore.testing import validate_options
from advcore.errors import AdvcoreError, PluginError
from advcore.testing import SmallCNN
from advcore.testing import tiny_batch, tiny_config, tiny_run
from advcore.testing import train, train_step

FROZEN = {"lr": 1e-12, "weight_decay": 0.0, "momentum": 0.0, "schedule": "constant"}


def context(**options):
    """The light context evaluation passes to configure_model."""
    opts = validate_options("he", advcore_he.Options, options)
    return SimpleNamespace(config=None, options={"he": opts}, device=torch.device("cpu"), info=None,
                           evaluation=True)


def he_model(**options):
    """A small CNN, its original head weight, and the same model after configure_model."""
    torch.manual_seed(0)
    model = SmallCNN(10, 1, 8, width=4, hidden=16)
    w0 = model.head.weight.detach().clone()
    advcore_he.advcore_configure_model(context(**options), model)
    return model, w0


def unit_rows(t):
    return t / t.pow(2).sum(dim=1, keepdim=True).sqrt()


X = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
Y = torch.tensor([0, 1, 2, 3, 4, 5])


def test_full_he_outputs_s_times_cosine_between_features_and_class_weights():
    model, w0 = he_model(s=15.0)
    z = model.features(X).detach()
    expected = 15.0 * unit_rows(z) @ unit_rows(w0).T
    out = model(X)
    assert torch.allclose(out, expected, atol=1e-5)
    assert out.abs().max() <= 15.0 + 1e-4
    assert not hasattr(model.head, "bias") or model.head.bias is None
    assert model.advcore_head["type"] == "hypersphere" and model.advcore_head["s"] == 15.0


def test_feature_normalisation_alone_keeps_the_raw_weights():
    model, w0 = he_model(s=2.0, weight_norm=False)
    z = model.features(X).detach()
    assert torch.allclose(model(X), 2.0 * unit_rows(z) @ w0.T, atol=1e-5)
    assert torch.equal(model.head.weight.detach(), w0)


def test_weight_normalisation_alone_projects_rows_in_place():
    model, w0 = he_model(s=3.0, feature_norm=False)
    z = model.features(X).detach()
    assert torch.allclose(model(X), 3.0 * z @ unit_rows(w0).T, atol=1e-5)
    norms = model.head.weight.detach().pow(2).sum(1).sqrt()
    assert torch.allclose(norms, torch.ones(10), atol=1e-6)  # the stored weight itself moved onto the sphere


def test_weight_gradient_is_taken_at_the_projected_weight_without_the_normalisation_jacobian():
    model, w0 = he_model(s=15.0)
    F.cross_entropy(model(X), Y).backward()
    z_hat = unit_rows(model.features(X).detach())
    w_hat = unit_rows(w0).requires_grad_(True)  # a leaf: no Jacobian of the normalisation
    F.cross_entropy(15.0 * z_hat @ w_hat.T, Y).backward()
    assert torch.allclose(model.head.weight.grad, w_hat.grad, atol=1e-6)
    w_param = w0.clone().requires_grad_(True)  # the differentiable reparameterisation differs
    F.cross_entropy(15.0 * z_hat @ unit_rows(w_param).T, Y).backward()
    assert not torch.allclose(w_param.grad, w_hat.grad, atol=1e-4)


def test_several_forwards_before_backward_and_reprojection_after_an_update():
    model, _ = he_model(s=15.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = F.cross_entropy(model(X), Y) + F.cross_entropy(model(X.flip(-1)), Y)
    loss.backward()  # a second in-place projection would break this backward
    opt.step()
    assert not torch.allclose(model.head.weight.detach().norm(dim=1), torch.ones(10), atol=1e-3)
    model(X)
    assert torch.allclose(model.head.weight.detach().norm(dim=1), torch.ones(10), atol=1e-6)


def test_m_he_outputs_minus_s_theta():
    model, w0 = he_model(s=10.0, variant="m-he")
    z = model.features(X).detach()
    cos = unit_rows(z) @ unit_rows(w0).T
    expected = torch.tensor([[-10.0 * math.acos(c) for c in row] for row in cos.tolist()])
    out = model(X)
    assert torch.allclose(out, expected, atol=1e-4)
    assert torch.equal(out.argmax(1), cos.argmax(1))  # -theta is monotone in cos(theta)


def test_m_he_needs_both_normalisations():
    with pytest.raises(AdvcoreError, match="options.he.*m-he needs feature_norm and weight_norm"):
        context(variant="m-he", weight_norm=False)


def test_switched_off_he_reproduces_a_linear_head_without_bias():
    plain_opts = {"s": 1.0, "m": 0.0, "feature_norm": False, "weight_norm": False}
    he_run = tiny_run(["he", "pgd-at"], {"he": plain_opts}, optim=FROZEN | {"lr": 0.05})
    plain_run = tiny_run(["pgd-at"], optim=FROZEN | {"lr": 0.05})
    with torch.no_grad():
        plain_run.model.head.bias.zero_()
    x = tiny_batch(he_run, 8).x
    assert torch.allclose(he_run.model(x), plain_run.model(x), atol=1e-6)
    torch.manual_seed(3)
    he_step = train_step(he_run, tiny_batch(he_run, 16), 0, 0)
    torch.manual_seed(3)
    plain_step = train_step(plain_run, tiny_batch(plain_run, 16), 0, 0)
    assert he_step.loss.item() == pytest.approx(plain_step.loss.item(), rel=1e-6)
    plain = dict(plain_run.model.named_parameters())
    for name, p in he_run.model.named_parameters():  # same update for every shared weight
        assert torch.allclose(p, plain[name], atol=1e-6), name


def test_margin_is_in_the_training_loss_only():
    run = tiny_run(["he", "pgd-at"], {"he": {"s": 15.0, "m": 0.2}}, optim=FROZEN)
    calls = []
    adjust = run.hooks.adjust_logits
    run.hooks.adjust_logits = lambda *a: calls.append(1) or adjust(*a)
    step = train_step(run, tiny_batch(run, 16), 0, 0)
    with torch.no_grad():
        logits = run.model(step.examples["adv"])  # what attacks and evaluation see: s*cos, no margin
    one_hot = torch.zeros_like(logits).scatter_(1, step.y[:, None], 1.0)
    expected = -(F.log_softmax(logits - 15.0 * 0.2 * one_hot, 1) * one_hot).sum(1).mean()
    assert step.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert step.loss.item() > F.cross_entropy(logits, step.y).item()
    assert len(calls) == 1  # the 3-step attack never asked for adjusted logits


def test_free_takes_its_input_gradient_from_the_margined_training_loss():
    """FreeAT + HE: the replay's perturbation step ascends CE(s cos - s m 1_y), not the margin-free CE.

    For mean CE over B samples the logit gradient is (softmax(z - s m 1_y) - 1_y) / B, so the input
    gradient is the model's vector-Jacobian product with that; the plain CE would give
    (softmax(z) - 1_y) / B. The margin moves the true-class probability down, which is the difference.
    """
    from advcore.attacks import project

    s, m = 15.0, 0.2
    run = tiny_run(["he", "free"], {"he": {"s": s, "m": m}, "free": {"replays": 1}}, optim=FROZEN)
    model = copy.deepcopy(run.model)  # the weights of the replay's backward (zero biases: ReLU ties would move)
    step = train_step(run, tiny_batch(run, 16), 0, 0)
    grad = step.input_gradient("attack")
    adv = step.examples["attack"].detach()
    x_adv = adv.clone().requires_grad_(True)
    logits = model(x_adv)
    one_hot = F.one_hot(step.y, logits.shape[1]).to(logits.dtype)
    with torch.no_grad():
        margined = (F.softmax(logits - s * m * one_hot, 1) - one_hot) / len(step.y)
        plain = (F.softmax(logits, 1) - one_hot) / len(step.y)
    g_margin, = torch.autograd.grad(logits, x_adv, margined, retain_graph=True)
    g_plain, = torch.autograd.grad(logits, x_adv, plain, retain_graph=True)
    g_shift, = torch.autograd.grad(logits, x_adv, margined - plain)  # what the margin alone contributes
    assert torch.allclose(grad, g_margin, atol=1e-7, rtol=1e-4)
    assert (grad - g_plain).abs().max() > 100 * (grad - g_margin).abs().max()  # not the plain CE gradient
    assert torch.allclose(grad - g_plain, g_shift, atol=1e-7, rtol=1e-4)
    assert (margined - plain)[one_hot.bool()].lt(0).all()  # the margin lowers every true-class probability
    delta = project(adv + step.eps.view(-1, 1, 1, 1) * g_margin.sign(), step.x, step.eps) - step.x
    assert torch.allclose(run.stash["free"], delta, atol=1e-6)  # the next replay starts from that step


def test_trades_with_he_puts_the_margin_on_the_natural_term_only():
    run = tiny_run(["he", "trades"], {"he": {"s": 15.0, "m": 0.3}, "trades": {"beta": 2.0}}, optim=FROZEN)
    step = train_step(run, tiny_batch(run, 16), 0, 0)
    with torch.no_grad():
        clean, adv = run.model(step.x), run.model(step.examples["adv"])
    one_hot = torch.zeros_like(clean).scatter_(1, step.y[:, None], 1.0)
    natural = -(F.log_softmax(clean - 15.0 * 0.3 * one_hot, 1) * one_hot).sum(1).mean()
    p, q = F.softmax(clean, 1), F.softmax(adv, 1)
    kl = (p * (p.log() - q.log())).sum(1).mean()
    assert step.loss.item() == pytest.approx((natural + 2.0 * kl).item(), rel=1e-4)


def test_soft_targets_get_the_margin_weighted_by_the_target():
    ctx = context(s=10.0, m=0.5)
    logits = torch.zeros(2, 3)
    soft = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.1, 0.9]])
    out = advcore_he.advcore_adjust_logits(run=ctx, logits=logits, target=soft)
    assert torch.allclose(out, torch.tensor([[-2.5, -2.5, 0.0], [0.0, -0.5, -4.5]]))
    hard = advcore_he.advcore_adjust_logits(run=ctx, logits=logits, target=torch.tensor([2, 0]))
    assert torch.allclose(hard, torch.tensor([[0.0, 0.0, -5.0], [-5.0, 0.0, 0.0]]))
    assert advcore_he.advcore_adjust_logits(run=context(m=0.2, angular_margin=False), logits=logits,
                                            target=soft) is None


def test_a_model_without_a_linear_head_is_refused_in_one_line():
    with pytest.raises(PluginError) as info:
        advcore_he.advcore_configure_model(context(), nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))
    message = str(info.value)
    assert "Sequential" in message and "nn.Linear head" in message and "\n" not in message


@pytest.mark.parametrize("other", ["trades", "alp", "fgsm-rs", "free", "iaat"])
def test_he_composes_with_objectives_adversaries_and_iaat(other):
    run = tiny_run(["he", other], {"free": {"replays": 2}} if other == "free" else None)
    step = train_step(run, tiny_batch(run, 16), 0, 0)
    assert isinstance(run.model.head, advcore_he.HypersphereHead)
    assert torch.isfinite(step.loss)
    gap = (step.examples["attack"] - step.x).abs().flatten(1).max(1).values
    assert (gap <= step.eps + 1e-6).all()


def test_saved_he_run_evaluates_with_no_plugin_flags(tmp_path):

    from advcore.testing import run_cli
    from advcore.testing import load_model

    config = tiny_config(["he"], {"he": {"s": 10.0}}, epochs=1, data={"subset": 64},
                         eval={"n": 32, "pgd_steps": 2})
    history = train(config, tmp_path, log=lambda *_: None)
    model, _, manifest = load_model(tmp_path, "cpu")
    assert isinstance(model.head, advcore_he.HypersphereHead) and model.head.s == 10.0
    assert manifest["model"]["head"]["type"] == "hypersphere"
    result = run_cli(["eval", str(tmp_path), "--json", "--attack", "pgd", "--n", "32",
                                      "--pgd-steps", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output.strip().splitlines()[-1])
    assert metrics["clean_acc"] == pytest.approx(history[-1]["clean_acc"])  # same model, same 32 samples
    assert 0.0 <= metrics["pgd2_acc"] <= metrics["clean_acc"]
