"""RAAT# (Sec. 5.3; reference-notes 8.6): one step against a hand derivation, and a bit-exact resume.

The derivation below rebuilds the loss from the model, its EMA copy and the adversary's output
with plain torch: split from the EMA (eval, no_grad), x'' = x + 0.1 (x' - x), CE on the first
view's rows only, DICAR in the code's form (one weight max(l, 1 - l), mixed logits, T = 0.5)
over the pairs the EMA classifies correctly in both views.
"""

import copy
import os

import pytest
import torch
import torch.nn.functional as F

from advcore import Batch
from advcore.errors import ConfigError
from advcore.testing import load_checkpoint, tiny_config, tiny_run, train, train_step
from advcore_raat.dicar import sample_beta, step_generator

os.environ.setdefault("ADVCORE_PROGRESS", "0")
torch.set_num_threads(1)

SHARP = {"dicar": "code", "reduced": "scaled", "boundary": "code", "indicators": "ema", "ce_views": "first"}
FROZEN = {"lr": 1e-12, "momentum": 0.0, "weight_decay": 0.0, "schedule": "constant"}


def two_view_batch(run, b=16):
    """b digits and their mirror images as the second view (the two views differ)."""
    index = torch.arange(b)
    x = run.train_set.images[index].float().div(255)
    y = run.train_set.labels[index]
    return Batch(x=x, y=y, index=index, views=[Batch(x=x.flip(-1).contiguous(), y=y, index=index)])


def sharp_run(dicar_start=0):
    torch.manual_seed(0)
    run = tiny_run(["raat"], {"raat": {**SHARP, "dicar_start": dicar_start}}, optim=FROZEN,
                   ema={"decay": 0.999}, attack={"eps": 0.3, "step_size": 0.1, "steps": 3})
    fit_clean(run.model, run.train_set)
    average = run.weight_average
    average.load_state_dict(run.model.state_dict())
    with torch.no_grad():  # an average that disagrees with the model, so the indicators' source matters
        for p in average.parameters():
            p.add_(0.15 * torch.randn_like(p) * p.abs().mean())
    return run


def fit_clean(model, data, steps=60):
    """A few clean SGD steps, so that both views of some samples are classified correctly."""
    x, y = data.images.float().div(255), data.labels
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for i in range(steps):
        rows = torch.arange(i * 32, i * 32 + 32) % len(y)
        inputs = torch.cat([x[rows], x[rows].flip(-1)])
        opt.zero_grad()
        F.cross_entropy(model(inputs), torch.cat([y[rows], y[rows]])).backward()
        opt.step()


def hand_loss(model, average, x, adv, y, b, epoch_has_dicar, seed, global_step):
    model = copy.deepcopy(model).train()
    with torch.no_grad():
        average = copy.deepcopy(average).eval()
        right = lambda inputs: average(inputs).argmax(1) == y  # noqa: E731
        reduced = x + 0.1 * (adv - x)
        correct, adv_ok, reduced_ok = right(x), right(adv), right(reduced)
    boundary = correct & ~adv_ok & ~reduced_ok
    trained = torch.where(boundary[:, None, None, None], reduced, adv)
    loss = F.cross_entropy(model(trained[:b]), y[:b])  # first augmentation only
    pairs = (correct[:b] & correct[b:]).nonzero().squeeze(1)
    if not epoch_has_dicar or pairs.numel() == 0:
        return loss, boundary, pairs
    lam = sample_beta(1, 0.75, step_generator(seed, global_step, 0)).item()
    m = max(lam, 1 - lam)
    z1 = model(m * adv[pairs] + (1 - m) * adv[pairs + b])
    clean = model(x)
    z2 = m * clean[pairs] + (1 - m) * clean[pairs + b]
    p1, p2 = F.softmax(z1 / 0.5, 1), F.softmax(z2 / 0.5, 1)
    mid = ((p1 + p2) / 2).clamp_min(1e-8)
    js = 0.5 * ((p1 * (p1.log() - mid.log())).sum(1) + (p2 * (p2.log() - mid.log())).sum(1))
    return loss + js.mean(), boundary, pairs


@pytest.mark.parametrize("dicar_start, epoch", [(0, 0), (3, 2)])
def test_one_raat_sharp_step_matches_the_hand_derivation(dicar_start, epoch):
    run = sharp_run(dicar_start)
    model, average = copy.deepcopy(run.model), copy.deepcopy(run.weight_average)
    step = train_step(run, two_view_batch(run), epoch, 0)
    b = step.size // 2
    expected, boundary, pairs = hand_loss(model, average, step.x, step.examples["attack"], step.y, b,
                                          epoch >= dicar_start, run.config.seed, 0)
    assert step.loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert torch.equal(step.groups["raat.boundary"], boundary) and boundary.any()  # x'' rows are exercised
    assert torch.equal(step.weights, torch.cat([torch.ones(b), torch.zeros(b)]))
    assert step.records["raat.dicar_pairs"][0] == pairs.numel() > 0
    # the indicators are the average's: the model's own split differs on this batch
    with torch.no_grad():
        own = model.eval()(step.x).argmax(1) == step.y
    assert not torch.equal(own, ~step.groups["raat.misclassified"])


def test_indicators_from_the_ema_need_the_weight_average():
    with pytest.raises(ConfigError, match=r"raat indicators=ema needs the weight average: add --set ema.decay=0.999"):
        tiny_run(["raat"], {"raat": {"indicators": "ema"}})


def _tensors(out):
    _, tensors = load_checkpoint(out / "checkpoints" / "last")
    return {k: v for k, v in tensors.items() if k.startswith(("model.", "optim.", "ema."))}


def test_raat_sharp_resume_is_bit_exact_including_the_average(tmp_path):
    config = tiny_config(["raat"], {"raat": {**SHARP, "dicar_start": 1}}, epochs=2, deterministic=True,
                         ema={"decay": 0.999}, data={"subset": 96, "batch_size": 32}, attack={"steps": 2},
                         eval={"n": 16, "pgd_steps": 1})
    train(config, tmp_path / "full", log=lambda _: None)
    train(config, tmp_path / "split", log=lambda _: None, stop_after=1)
    train(config, tmp_path / "split", resume=True, log=lambda _: None)
    full, split = _tensors(tmp_path / "full"), _tensors(tmp_path / "split")
    assert any(k.startswith("ema.") for k in full) and full.keys() == split.keys()
    for key in full:
        assert torch.equal(full[key], split[key]), key
