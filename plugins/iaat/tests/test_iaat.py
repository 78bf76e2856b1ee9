"""IAAT's radius search against a model whose attack outcome is known in closed form."""

import csv

import pytest
import torch

from advcore import Step
import torch.nn as nn

from advcore.testing import load_checkpoint
from advcore import Step
from advcore.testing import tiny_batch, tiny_config, tiny_run
from advcore.testing import train, train_step

GAMMA, BETA = 0.05, 0.25


class MeanThreshold(nn.Module):
    """Class 0 scores mean(x) - 0.5 (+10 below mean 0.2, a step without gradient); the others 0.

    Label 0 is predicted iff mean(x) > 0.5 or mean(x) < 0.2. The CE gradient is negative on
    every pixel, so one signed step of size >= 2e from any start in the ball lands on x - e:
    label 0 survives radius e iff mean(x) - e > 0.5 or mean(x) - e < 0.2. The second band
    makes a larger radius survive where a smaller one does not (as a random start can).
    """

    def forward(self, x):
        mean = x.flatten(1).mean(1)
        score = mean - 0.5 + 10.0 * (mean < 0.2).float()
        return torch.cat([score[:, None], torch.zeros(x.shape[0], 9)], dim=1)


def survives(v, e):
    return v - e > 0.5 or v - e < 0.2


# (pixel value v, stored radius p): which attacks the label survives decides each branch of Alg. 2
CASES = [(0.80, 0.10),  # survives p+g: up
         (0.63, 0.10),  # survives p, not p+g: keep
         (0.58, 0.10),  # survives neither: down
         (0.52, 0.03),  # down below zero: floored at 0
         (0.40, 0.10),  # clean-misclassified: down; the code variant zeroes the pick
         (0.90, 0.30),  # large radius, up
         (0.60, 0.38)]  # fails at p, survives p+g: up all the same (Alg. 2 tests p+g first)


def expected_radius(v, p, misclassified, lower_bound=0.0):
    pick = p + GAMMA if survives(v, p + GAMMA) else (p if survives(v, p) else p - GAMMA)
    if misclassified == "code" and v <= 0.5:
        pick = 0.0
    return max(BETA * max(pick, 0.0) + (1 - BETA) * p, lower_bound)


def search_step(misclassified="clean", epoch=1, lower_bound=0.0, warmup_eps=None):
    """select_samples on the closed-form model; the attack step 1.0 reaches the ball's corner."""
    run = tiny_run(["iaat"], {"iaat": {"warmup": 1, "gamma": GAMMA, "beta": BETA, "misclassified": misclassified,
                                       "lower_bound": lower_bound, "warmup_eps": warmup_eps}},
                   attack={"steps": 1, "step_size": 1.0})
    x = torch.stack([torch.full((1, 8, 8), v) for v, _ in CASES])
    index = torch.tensor([3, 7, 11, 19, 23, 42, 50])
    run.state.tensor("iaat.radius")[index] = torch.tensor([p for _, p in CASES])
    n = len(CASES)
    step = Step(run=run, model=MeanThreshold(), x=x, y=torch.zeros(n, dtype=torch.long), index=index,
                epoch=epoch, batch=0, eps=torch.full((n,), run.eps), step_size=torch.full((n,), run.step_size),
                steps=1)
    run.hooks.select_samples(run, step)
    return run, step, index


@pytest.mark.parametrize("misclassified", ["clean", "code"])
def test_search_picks_the_branch_alg2_prescribes(misclassified):
    run, step, index = search_step(misclassified)
    expected = torch.tensor([expected_radius(v, p, misclassified) for v, p in CASES])
    assert torch.allclose(run.state["iaat.radius"][index], expected, atol=1e-6)
    correct = torch.tensor([v > 0.5 for v, _ in CASES])
    assert torch.equal(step.groups["iaat_correct"], correct)
    train_eps = expected * correct if misclassified == "clean" else expected
    assert torch.allclose(step.eps, train_eps, atol=1e-6)
    assert run.state["iaat.seen"].sum() == len(CASES)


def test_lower_bound_floors_the_smoothed_radius():
    run, _, index = search_step(lower_bound=0.03)
    expected = torch.tensor([expected_radius(v, p, "clean", lower_bound=0.03) for v, p in CASES])
    assert torch.allclose(run.state["iaat.radius"][index], expected, atol=1e-6)
    assert run.state["iaat.radius"][19].item() == pytest.approx(0.03)


@pytest.mark.parametrize("misclassified", ["clean", "code"])
def test_warmup_uses_the_uniform_radius_and_zero_for_misclassified(misclassified):
    run, step, index = search_step(misclassified, epoch=0, warmup_eps=0.07)
    correct = torch.tensor([v > 0.5 for v, _ in CASES], dtype=torch.float32)
    assert torch.allclose(step.eps, 0.07 * correct)
    stored = 0.07 * correct if misclassified == "code" else torch.full((len(CASES),), 0.07)
    assert torch.allclose(run.state["iaat.radius"][index], stored)


def test_misclassified_samples_train_on_the_clean_input_and_step_size_follows_the_radius():
    run = tiny_run(["iaat"], {"iaat": {"warmup": 1, "warmup_eps": 0.1, "misclassified": "clean"}},
                   attack={"steps": 2, "step_size": 0.005})
    step = train_step(run, tiny_batch(run, 32), 0, 0)
    correct = step.groups["iaat_correct"]
    assert correct.any() and (~correct).any()
    adv, x = step.examples["adv"], step.x
    assert torch.equal(adv[~correct], x[~correct])
    gap = (adv - x).abs().flatten(1).max(1).values
    assert (gap[correct] > 0).all() and (gap[correct] <= 0.1 + 1e-6).all()
    assert torch.allclose(step.step_size, torch.where(correct, 0.02, 0.005))  # max(eps/5, attack.step_size)


def test_radii_survive_resume_and_match_an_uninterrupted_run(tmp_path):
    settings = dict(data={"subset": 64}, eval={"n": 16, "pgd_steps": 1}, attack={"steps": 2},
                    optim={"schedule": "constant", "lr": 0.05})
    options = {"iaat": {"warmup": 1, "gamma": 0.02}}
    straight = tmp_path / "straight"
    train(tiny_config(["iaat"], options, epochs=2, **settings), straight, log=lambda *_: None)
    parts = tmp_path / "resumed"
    train(tiny_config(["iaat"], options, epochs=1, **settings), parts, log=lambda *_: None)
    _, after_one = load_checkpoint(parts / "checkpoints" / "last")
    history = train(tiny_config(["iaat"], options, epochs=2, **settings), parts, resume=True, log=lambda *_: None)
    _, first = load_checkpoint(straight / "checkpoints" / "last")
    _, second = load_checkpoint(parts / "checkpoints" / "last")
    assert after_one["state.iaat.seen"].sum() == 64
    assert not torch.equal(after_one["state.iaat.radius"], second["state.iaat.radius"])  # epoch 2 searched
    assert torch.equal(first["state.iaat.radius"], second["state.iaat.radius"])
    assert sum(history[-1]["iaat.radius_hist"]) == 64


def test_epoch_end_reports_histogram_and_writes_the_radii_csv(tmp_path):
    run, _, index = search_step()
    run.out = tmp_path
    metrics = {}
    run.hooks.on_epoch_end(run, 1, metrics)
    radii = [expected_radius(v, p, "clean") for v, p in CASES]
    top = 2 * run.eps
    counts = [0] * 10
    for r in radii:
        counts[min(int(r / (top / 10)), 9)] += 1
    assert metrics["iaat.radius_hist"] == counts
    assert metrics["iaat.radius_mean"] == pytest.approx(sum(radii) / len(radii), abs=1e-6)
    rows = list(csv.DictReader(open(tmp_path / "iaat-radii.csv")))
    assert [int(r["index"]) for r in rows] == index.tolist()
    assert [int(r["label"]) for r in rows] == run.train_set.labels[index].tolist()
    assert [float(r["radius"]) for r in rows] == pytest.approx(radii, abs=1e-6)


def test_defaults_are_the_authors_code_and_the_training_attack_runs_in_train_mode():
    """trainer_adaptive.py: misclassified keep (1 - beta) * radius, and every attack is in train mode (L99)."""
    run = tiny_run(["iaat"])
    assert run.options["iaat"].misclassified == "code"
    step = Step(run=run, model=run.model, x=None, y=None, index=None, epoch=0, batch=0, eps=None, step_size=None, steps=1)
    assert run.hooks.attack_objective(run, step).mode == "train"  # pgd-at publishes eval
    run = tiny_run(["iaat"], {"iaat": {"attack_mode": "objective"}})
    assert run.hooks.attack_objective(run, step).mode == "eval"
