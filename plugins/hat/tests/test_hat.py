"""HAT against independent computations: helper example, helper label, each loss term, the attack."""

import copy
import json
import shutil
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import advcore_hat
from advcore import Run
from advcore import reduce_terms
from advcore.testing import seal_manifest
from advcore.errors import AdvcoreError, Interrupted
from advcore import Step
from advcore.testing import tiny_batch, tiny_config, tiny_run
from advcore.testing import train, train_step

FROZEN = {"lr": 1e-12, "weight_decay": 0.0, "momentum": 0.0, "schedule": "constant"}


class FirstPixels(torch.nn.Module):
    """A stand-in standard network whose prediction is the brightest of the first ten pixels."""

    def forward(self, x):
        return 100 * x.flatten(1)[:, :10]


def fixed_step(run, size=12):
    """A Step on digits with a hand-made perturbation of +-eps, one row pushed towards 0."""
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(size, 1, 8, 8, generator=gen) * 0.6 + 0.2
    x[0, 0, 0, :] = 0.05  # r = -0.05 here: x + 2r = -0.05 leaves [0, 1]
    r = (torch.rand(x.shape, generator=gen) < 0.5).float() * 0.2 - 0.1
    r[0, 0, 0, :] = -0.05
    y = torch.arange(size) % 10
    step = Step(run=run, model=run.model, x=x, y=y, index=torch.arange(size), epoch=0, batch=0,
                eps=torch.full((size,), 0.1), step_size=torch.full((size,), 0.025), steps=1)
    step.examples["attack"] = step.examples["adv"] = (x + r).clamp(0, 1)
    return step


def test_helper_example_label_and_each_term_match_an_independent_computation(std_checkpoint):
    run = tiny_run(["hat"], {"hat": {"beta": 1.5, "gamma": 0.7, "std_checkpoint": std_checkpoint}})
    run.stash["hat"].std = FirstPixels()
    step = fixed_step(run)
    run.hooks.derive_examples(run, step)
    run.hooks.adapt_targets(run, step)

    x, x_adv = step.x, step.examples["adv"]
    helper = x + 2 * (x_adv - x)
    assert torch.equal(step.examples["helper"], helper)
    assert step.examples["helper"].min() < 0  # not clipped (authors' code)

    label = (100 * x_adv.flatten(1)[:, :10]).argmax(1)
    assert torch.equal(step.targets["helper"], label)
    assert (label != x.flatten(1)[:, :10].argmax(1)).any()  # not queried at x ...
    assert (label != helper.flatten(1)[:, :10].argmax(1)).any()  # ... nor at the helper

    calls = []
    run.model.register_forward_hook(lambda m, inp, out: calls.append(inp[0].shape[0]))
    run.model.train()
    terms = {t.name: t for t in run.hooks.loss_terms(run, step)}
    assert calls == [12, 12, 12]  # three separate forwards, no concatenated batch
    with torch.no_grad():
        clean, adv, help_ = run.model(x), run.model(x_adv), run.model(helper)
    kl = F.kl_div(F.log_softmax(adv, 1), F.softmax(clean, 1), reduction="none").sum(1)
    assert torch.allclose(terms["ce_clean"].values, F.cross_entropy(clean, step.y, reduction="none"), atol=1e-6)
    assert torch.allclose(terms["kl"].values, kl, atol=1e-6)
    assert torch.allclose(terms["ce_helper"].values, F.cross_entropy(help_, label, reduction="none"), atol=1e-6)
    assert (terms["kl"].weight, terms["ce_helper"].weight) == (1.5, 0.7)
    expected = F.cross_entropy(clean, step.y) + 1.5 * kl.mean() + 0.7 * F.cross_entropy(help_, label)
    assert reduce_terms(list(terms.values()), None).item() == pytest.approx(expected.item(), rel=1e-5)


def test_kl_clean_side_is_not_detached(std_checkpoint):
    run = tiny_run(["hat"], {"hat": {"std_checkpoint": std_checkpoint}})
    step = fixed_step(run)
    run.hooks.derive_examples(run, step)
    run.hooks.adapt_targets(run, step)
    kl = {t.name: t for t in run.hooks.loss_terms(run, step)}["kl"].values.sum()
    (grad,) = torch.autograd.grad(kl, step.logits("clean"))
    assert grad.abs().sum() > 0


def test_clip_helper_option_clips(std_checkpoint):
    run = tiny_run(["hat"], {"hat": {"clip_helper": True, "h": 3.0, "std_checkpoint": std_checkpoint}})
    step = fixed_step(run)
    run.hooks.derive_examples(run, step)
    x, x_adv = step.x, step.examples["adv"]
    assert torch.equal(step.examples["helper"], (x + 3.0 * (x_adv - x)).clamp(0, 1))


def _step(plugins, options, seed=7, **overrides):
    run = tiny_run(plugins, options, optim=FROZEN, **overrides)
    torch.manual_seed(seed)
    step = train_step(run, tiny_batch(run, 16), 0, 0)
    return run, step


def test_hat_with_gamma_zero_is_trades_loss_and_gradients():
    hat_run, hat_step = _step(["hat"], {"hat": {"beta": 3.0, "gamma": 0.0}})
    trades_run, trades_step = _step(["trades"], {"trades": {"beta": 3.0}})
    assert "helper" not in hat_step.examples and hat_run.stash["hat"].std is None  # no standard network needed
    assert torch.equal(hat_step.examples["adv"], trades_step.examples["adv"])
    assert hat_step.loss.item() == trades_step.loss.item()
    for (name, p), q in zip(hat_run.model.named_parameters(), trades_run.model.parameters()):
        assert torch.equal(p.grad, q.grad), name


def test_attack_is_kl_to_clean_probs_computed_once_in_eval_mode_from_a_gaussian_start(std_checkpoint):
    opts = {"hat": {"std_checkpoint": std_checkpoint}}
    arch = {"arch": "resnet18", "width": 8}  # with BatchNorm, so eval vs train mode shows
    run = tiny_run(["hat"], opts, optim=FROZEN, model=arch, attack={"steps": 2})
    batch = tiny_batch(run, 16)
    model = copy.deepcopy(run.model)  # before the update moves the BatchNorm statistics
    torch.manual_seed(11)
    step = train_step(run, batch, 0, 0)

    # reference, written from the paper / authors' code
    x, eps, alpha = batch.x, run.eps, run.step_size
    torch.manual_seed(11)
    x_adv = x + 0.001 * torch.randn_like(x)
    model.eval()
    with torch.no_grad():
        p_nat = F.softmax(model(x), 1)
    for _ in range(2):
        x_adv.requires_grad_(True)
        loss = F.kl_div(F.log_softmax(model(x_adv), 1), p_nat, reduction="sum")
        (g,) = torch.autograd.grad(loss, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + alpha * g.sign(), x - eps), x + eps).clamp(0, 1)
    assert torch.allclose(step.examples["attack"], x_adv, atol=1e-6)


def test_at_based_variant_uses_ce_for_attack_and_robust_term(std_checkpoint):
    opts = {"hat": {"robust_loss": "ce", "beta": 1.75, "gamma": 1.0, "std_checkpoint": std_checkpoint}}
    run, step = _step(["hat"], opts, attack={"steps": 2})
    model, x, y = run.model, step.x, step.y
    torch.manual_seed(7)  # uniform start, clipped, then CE sign steps
    x_adv = (x + (torch.rand_like(x) * 2 - 1) * run.eps).clamp(0, 1)
    model.eval()
    for _ in range(2):
        x_adv.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y, reduction="sum"), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + run.step_size * g.sign(), x - run.eps), x + run.eps).clamp(0, 1)
    assert torch.allclose(step.examples["adv"], x_adv, atol=1e-6)
    std = run.stash["hat"].std
    with torch.no_grad():
        label = std(x_adv).argmax(1)
        clean, adv, helper = model(x), model(x_adv), model(x + 2 * (x_adv - x))
    expected = F.cross_entropy(clean, y) + 1.75 * F.cross_entropy(adv, y) + 1.0 * F.cross_entropy(helper, label)
    assert step.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_beta_default_follows_the_paper_per_dataset():
    run = SimpleNamespace(options={"hat": advcore_hat.Options()}, info=SimpleNamespace(name="cifar100"))
    assert advcore_hat.beta_of(run) == 3.5
    run.info = SimpleNamespace(name="cifar10")
    assert advcore_hat.beta_of(run) == 2.5
    run.options["hat"] = advcore_hat.Options(beta=5.0)
    assert advcore_hat.beta_of(run) == 5.0


def test_standard_network_runs_in_inference_mode(std_checkpoint):
    run = tiny_run(["hat"], {"hat": {"std_checkpoint": std_checkpoint}})
    std = run.stash["hat"].std
    assert not std.training and not any(p.requires_grad for p in std.parameters())
    assert std is not run.model and type(std) is type(run.model)


def test_standard_network_is_trained_into_the_run_directory_and_reused_on_resume(tmp_path, monkeypatch):
    config = tiny_config(["hat"], {"hat": {"std_epochs": 1}}, epochs=1, data={"subset": 64},
                         eval={"n": 16, "pgd_steps": 1})
    train(config, tmp_path, log=lambda line: None)
    std_dir = tmp_path / "hat-standard"
    manifest = json.loads((std_dir / "checkpoints" / "last.json").read_text())
    assert "standard" in [p["name"] for p in manifest["plugins"]] and manifest["epoch"] == 1

    def no_retraining(*args, **kwargs):
        raise AssertionError("the standard network was trained again")

    monkeypatch.setattr(Run, "train_auxiliary", no_retraining)
    train(config.model_copy(update={"epochs": 2}), tmp_path, resume=True, log=lambda line: None)
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_partly_trained_standard_network_is_resumed_not_restarted(tmp_path, monkeypatch):
    std_dir = tmp_path / "hat-standard"
    config = tiny_config(["hat"], {"hat": {"std_epochs": 2}}, epochs=1, data={"subset": 64},
                         eval={"n": 16, "pgd_steps": 1})
    train(advcore_hat.standard.standard_config(config, 2), std_dir, stop_after=1, log=lambda line: None)
    calls = []
    real = Run.train_auxiliary
    monkeypatch.setattr(Run, "train_auxiliary",
                        lambda self, cfg, out, **kw: calls.append(kw["resume"]) or real(self, cfg, out, **kw))
    train(config, tmp_path, log=lambda line: None)
    assert calls == [True]
    assert json.loads((std_dir / "checkpoints" / "last.json").read_text())["epoch"] == 2


def test_an_interrupted_standard_training_says_how_to_continue(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise Interrupted("stopped by SIGINT at epoch 1 batch 2")

    monkeypatch.setattr(Run, "train_auxiliary", interrupted)
    with pytest.raises(AdvcoreError, match=r"standard network was stopped; its checkpoint is in .*hat-standard: "
                                           r"run the same command again to continue it"):
        train(tiny_config(["hat"], epochs=1), tmp_path, log=lambda line: None)


def test_a_standard_network_for_other_data_is_refused(std_checkpoint, tmp_path):
    src = std_checkpoint + ".json"
    manifest = json.loads(open(src).read())
    shutil.copy(src.replace("last.json", manifest["tensors_file"]), tmp_path / manifest["tensors_file"])
    manifest["config"]["data"]["dataset"] = "mnist"
    (tmp_path / "last.json").write_text(json.dumps(seal_manifest(manifest)))  # a deliberate edit, re-sealed
    with pytest.raises(AdvcoreError, match=r"trained on mnist, this run uses digits; give a standard network"):
        tiny_run(["hat"], {"hat": {"std_checkpoint": str(tmp_path / "last")}})
