"""fast-atta: one step from the cached perturbation, aligned with crop/flip, first visits, resets."""

import copy

import pytest
import torch
import torch.nn.functional as F

from advcore import Batch
from advcore.errors import PluginError
from advcore.testing import resolve
from advcore.testing import tiny_batch, tiny_run
from advcore.testing import train_step

FROZEN = {"lr": 1e-12, "weight_decay": 0.0, "momentum": 0.0, "schedule": "constant"}
ARCH = {"arch": "resnet18", "width": 8}  # BatchNorm: the step's model mode matters
EPS = 0.1


def kl_step(model, x, start, alpha, eps):
    """Reference TRADES/HAT step, written out: eval mode, KL(p(x) || p(start)), sign step, project."""
    model.eval()
    with torch.no_grad():
        p = F.softmax(model(x), 1)
    start = start.clone().requires_grad_(True)
    loss = F.kl_div(F.log_softmax(model(start), 1), p, reduction="sum")
    (g,) = torch.autograd.grad(loss, start)
    return torch.min(torch.max(start.detach() + alpha * g.sign(), x - eps), x + eps).clamp(0, 1)


def ce_step(model, x, y, start, alpha, eps):
    model.eval()
    start = start.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(start), y, reduction="sum"), start)
    return torch.min(torch.max(start.detach() + alpha * g.sign(), x - eps), x + eps).clamp(0, 1)


def seeded_cache(run, index):
    """A known perturbation in every frame of ``index``, marked as visited."""
    delta, visited = run.state["fast-atta.delta"], run.state["fast-atta.visited"]
    gen = torch.Generator().manual_seed(5)
    delta[index] = (torch.rand(delta[index].shape, generator=gen) * 2 - 1) * EPS
    visited[index] = True
    return delta[index].clone()


def test_frame_is_padded_by_the_augmentation():
    run = tiny_run(["trades", "fast-atta"], attack={"eps": EPS})
    assert run.state["fast-atta.delta"].shape == (len(run.train_set), 1, 10, 10)  # digits: 8x8, padding 1
    plain = tiny_run(["trades", "fast-atta"], data={"augment": False})
    assert plain.state["fast-atta.delta"].shape == (len(plain.train_set), 1, 8, 8)


@pytest.mark.parametrize("objective", ["trades", "pgd-at"])
def test_one_projected_step_from_the_cached_perturbation_on_the_objectives_inner_loss(objective):
    run = tiny_run([objective, "fast-atta"], optim=FROZEN, model=ARCH, attack={"eps": EPS})
    batch = tiny_batch(run, 16)  # not augmented: the centre window of the frame
    before = seeded_cache(run, batch.index)
    model = copy.deepcopy(run.model)
    step = train_step(run, batch, 0, 0)

    x, alpha = batch.x, 0.5 * EPS
    start = x + before[:, :, 1:9, 1:9]
    if objective == "trades":
        expected = kl_step(model, x, start, alpha, EPS)
    else:
        expected = ce_step(model, x, batch.y, start, alpha, EPS)
    assert torch.allclose(step.examples["attack"], expected, atol=1e-6)

    after = run.state["fast-atta.delta"][batch.index]
    assert torch.allclose(after[:, :, 1:9, 1:9], expected - x, atol=1e-6)
    border = torch.ones_like(after, dtype=torch.bool)
    border[:, :, 1:9, 1:9] = False
    assert torch.equal(after[border], before[border])  # pixels outside the window keep their values


def test_cache_window_follows_each_samples_crop_and_flip():
    run = tiny_run(["pgd-at", "fast-atta"], {"fast-atta": {"alpha": 0.03}}, optim=FROZEN, attack={"eps": EPS})
    raw = tiny_batch(run, 4)
    crop = torch.tensor([[0, 0], [2, 1], [1, 2], [2, 2]])
    flip = torch.tensor([False, True, True, False])
    aug = run.augment
    x = aug.apply(raw.x, crop, flip)
    before = seeded_cache(run, raw.index)
    model = copy.deepcopy(run.model)
    step = train_step(run, Batch(x, raw.y, raw.index, crop, flip), 0, 0)

    windows, pasted = [], before.clone()
    for i, ((r, c), f) in enumerate(zip(crop.tolist(), flip.tolist())):
        w = before[i, :, r:r + 8, c:c + 8]
        windows.append(w.flip(-1) if f else w)
    expected = ce_step(model, x, raw.y, x + torch.stack(windows), 0.03, EPS)
    assert torch.allclose(step.examples["attack"], expected, atol=1e-6)
    for i, ((r, c), f) in enumerate(zip(crop.tolist(), flip.tolist())):
        d = expected[i] - x[i]
        pasted[i, :, r:r + 8, c:c + 8] = d.flip(-1) if f else d
    assert torch.allclose(run.state["fast-atta.delta"][raw.index], pasted, atol=1e-6)


def test_first_visit_starts_uniform_over_the_whole_frame_and_marks_the_sample():
    run = tiny_run(["pgd-at", "fast-atta"], optim=FROZEN, attack={"eps": EPS})
    batch = tiny_batch(run, 16)
    step = train_step(run, batch, 0, 0)
    assert step.records["fast-atta.first_visits"][0] == 1.0
    delta, visited = run.state["fast-atta.delta"], run.state["fast-atta.visited"]
    assert visited[batch.index].all() and visited.sum() == 16
    border = delta[batch.index][:, :, 0, :]  # never inside the centre window: the untouched init
    assert border.abs().max() <= EPS and border.abs().max() > 0.9 * EPS and border.std() > 0.4 * EPS
    assert (step.examples["attack"] - batch.x).abs().max() <= EPS + 1e-6
    step = train_step(run, batch, 0, 1)
    assert step.records["fast-atta.first_visits"][0] == 0.0


def test_the_objectives_model_mode_is_used():
    """pgd-at with attack_mode=train: the step's reference runs in train mode (batch statistics)."""
    run = tiny_run(["pgd-at", "fast-atta"], {"pgd-at": {"attack_mode": "train"}}, optim=FROZEN, model=ARCH,
                   attack={"eps": EPS})
    batch = tiny_batch(run, 16)
    before = seeded_cache(run, batch.index)
    model = copy.deepcopy(run.model)
    step = train_step(run, batch, 0, 0)
    start = (batch.x + before[:, :, 1:9, 1:9]).requires_grad_(True)
    model.train()
    (g,) = torch.autograd.grad(F.cross_entropy(model(start), batch.y, reduction="sum"), start)
    expected = torch.min(torch.max(start.detach() + 0.05 * g.sign(), batch.x - EPS), batch.x + EPS).clamp(0, 1)
    assert torch.allclose(step.examples["attack"], expected, atol=1e-6)


def test_reset_every_forgets_the_cache_at_multiples_only_once():
    run = tiny_run(["pgd-at", "fast-atta"], {"fast-atta": {"reset_every": 2}}, attack={"eps": EPS})
    visited = run.state["fast-atta.visited"]
    visited[:5] = True
    run.hooks.on_epoch_start(run, 1)
    assert visited.sum() == 5
    run.hooks.on_epoch_start(run, 2)
    assert visited.sum() == 0
    visited[:5] = True
    run.hooks.on_epoch_start(run, 2)  # the same epoch again (a mid-epoch resume): no second reset
    assert visited.sum() == 5
    assert run.hooks.state_dict(run)["fast-atta"]["json"] == {"last_reset": 2}


def test_two_base_adversaries_are_refused_naming_both():
    with pytest.raises(PluginError, match="'fast-atta' and 'free' both claim the adversary role"):
        resolve(["fast-atta", "free"])


def test_more_steps_per_visit_repeat_the_projected_step():
    run = tiny_run(["pgd-at", "fast-atta"], {"fast-atta": {"steps": 2, "alpha": 0.04}}, optim=FROZEN, model=ARCH,
                   attack={"eps": EPS})
    batch = tiny_batch(run, 16)
    before = seeded_cache(run, batch.index)
    model = copy.deepcopy(run.model)
    step = train_step(run, batch, 0, 0)
    once = ce_step(model, batch.x, batch.y, batch.x + before[:, :, 1:9, 1:9], 0.04, EPS)
    expected = ce_step(model, batch.x, batch.y, once, 0.04, EPS)
    assert torch.allclose(step.examples["attack"], expected, atol=1e-6)
