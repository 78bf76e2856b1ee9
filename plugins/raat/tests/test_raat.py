"""RAAT on a hand-set linear model whose boundary / non-boundary / misclassified split is known.

The model scores d(x) = logit_0 - logit_1 = k (2 mean(x) - 1) (the other eight classes carry a
bias of -100, so it is a two-class problem). For a constant image x = c * 1 of class 0 the
strongest Linf attack of radius r moves every pixel by -r, so c > 0.5 is correct, the full
attack (eps = 0.1) flips it when c < 0.6, and the reduced sample x + 0.1 (x' - x) (radius 0.01)
flips it when c < 0.51. Class 1 mirrors this around 0.5.
"""

import json
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import stats

from advcore.testing import run_cli
from advcore import Batch
from advcore.errors import PluginError
from advcore.testing import tiny_batch, tiny_config, tiny_run
from advcore.testing import train, train_step
from advcore_raat.dicar import mixing_weights, sample_beta, step_generator
from advcore_raat.split import split_rows

os.environ.setdefault("ADVCORE_PROGRESS", "0")
torch.set_num_threads(1)

EPS, ETA, STEPS = 0.1, 0.1, 10
# (label, c of view 1, c of view 2) and the expected group of each view
SAMPLES = [
    (0, 0.70, 0.72),    # robust: non-boundary in both views
    (0, 0.55, 0.56),    # flipped by the full attack only: non-boundary
    (0, 0.505, 0.507),  # flipped already within eta*eps: boundary
    (0, 0.45, 0.46),    # misclassified
    (1, 0.30, 0.28),    # robust
    (1, 0.45, 0.44),    # flipped by the full attack only
    (1, 0.495, 0.493),  # boundary
    (0, 0.70, 0.45),    # view 1 robust, view 2 misclassified: no DICAR pair
]
NB, BD, MIS = "non_boundary", "boundary", "misclassified"
GROUP_1 = [NB, NB, BD, MIS, NB, NB, BD, NB]
GROUP_2 = [NB, NB, BD, MIS, NB, NB, BD, MIS]
EXPECTED = GROUP_1 + GROUP_2
PAIRS = [0, 1, 2, 4, 5, 6]  # both views correct


class MeanScore(nn.Module):
    """A linear classifier with the shape every advcore model has (features + head)."""

    def __init__(self, size: int, k: float = 10.0):
        super().__init__()
        self.head = nn.Linear(size, 10)
        self.feature_dim = size
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.weight[0] = k / size
            self.head.weight[1] = -k / size
            self.head.bias.fill_(-100.0)
            self.head.bias[0] = -k / 2
            self.head.bias[1] = k / 2

    def features(self, x):
        return x.flatten(1)

    def forward(self, x):
        return self.head(self.features(x))


def linear_run(plugins, options=None, seed=0, **overrides):
    config = dict(optim={"lr": 1e-12, "momentum": 0.0, "weight_decay": 0.0, "schedule": "constant"},
                  attack={"eps": EPS, "step_size": EPS / 4, "steps": STEPS}, seed=seed)
    config.update(overrides)
    run = tiny_run(plugins, options, **config)
    run.model = MeanScore(64)
    run.optimizer = torch.optim.SGD(run.model.parameters(), lr=1e-12)
    return run


def known_batch(run):
    y = torch.tensor([s[0] for s in SAMPLES])
    index = torch.arange(len(SAMPLES))
    views = [torch.stack([torch.full((1, 8, 8), s[v]) for s in SAMPLES]) for v in (1, 2)]
    extra = [Batch(x=views[1], y=y, index=index)] if run.views == 2 else []
    return Batch(x=views[0], y=y, index=index, views=extra)


def expected_attack(step):
    direction = torch.where(step.y == 0, -1.0, 1.0).view(-1, 1, 1, 1)
    return step.x + EPS * direction


def reference_step(run, batch, dicar="code", lam=1.0, temperature=0.5):
    """One step, then the RAAT loss recomputed from the construction (split known a priori)."""
    step = train_step(run, batch, 0, 0)
    model, x, y = run.model, step.x, step.y
    x_adv = expected_attack(step)
    boundary = torch.tensor([g == BD for g in EXPECTED])
    x_train = torch.where(boundary.view(-1, 1, 1, 1), x + ETA * (x_adv - x), x_adv)
    b = len(SAMPLES)
    pairs = torch.tensor(PAIRS)
    with torch.no_grad():
        ce = F.cross_entropy(model(x_train), y)  # mean over all 2B rows
        w = mixing_weights(b, 0.75, dicar, step_generator(run.config.seed, 0))[pairs]
        wx = w.view(-1, 1, 1, 1)
        z_mix = model(wx * x_adv[pairs] + (1 - wx) * x_adv[pairs + b])
        z1, z2 = model(x[pairs]), model(x[pairs + b])
        p = F.softmax(z_mix / temperature, 1)
        if dicar == "code":
            q = F.softmax((w[:, None] * z1 + (1 - w[:, None]) * z2) / temperature, 1)
        else:
            q = w[:, None] * F.softmax(z1 / temperature, 1) + (1 - w[:, None]) * F.softmax(z2 / temperature, 1)
        log_m = (0.5 * (p + q)).clamp(min=1e-8).log()
        js = 0.5 * (F.kl_div(log_m, p, reduction="batchmean") + F.kl_div(log_m, q, reduction="batchmean"))
    return step, ce, js, x_train, w


def test_split_matches_the_construction_and_boundary_rows_train_on_the_reduced_sample():
    run = linear_run(["raat"])
    step = train_step(run, known_batch(run), 0, 0)
    assert step.size == 2 * len(SAMPLES)
    assert torch.allclose(step.examples["attack"], expected_attack(step), atol=1e-6)
    for group in (NB, BD, MIS):
        expected = torch.tensor([g == group for g in EXPECTED])
        assert torch.equal(step.groups[f"raat.{group}"], expected), group
    x, x_adv = step.x, step.examples["attack"]
    is_bd = step.groups["raat.boundary"].view(-1, 1, 1, 1)
    want = torch.where(is_bd, x + ETA * (x_adv - x), x_adv)
    assert torch.allclose(step.examples["adv"], want, atol=1e-7)
    assert (step.examples["adv"][2] - x[2]).abs().max().item() == pytest.approx(ETA * EPS, abs=1e-6)
    assert step.records["raat.boundary"] == (4.0, "sum")
    assert step.records["raat.misclassified"] == (3.0, "sum")


def test_paper_reduced_sample_is_an_attack_within_eta_eps():
    run = linear_run(["raat"], {"raat": {"reduced": "attack"}})
    step = train_step(run, known_batch(run), 0, 0)
    x = step.x
    for group in (NB, BD, MIS):
        assert torch.equal(step.groups[f"raat.{group}"], torch.tensor([g == group for g in EXPECTED]))
    bd = step.groups["raat.boundary"]
    direction = torch.where(step.y == 0, -1.0, 1.0).view(-1, 1, 1, 1)
    assert torch.allclose(step.examples["adv"][bd], (x + ETA * EPS * direction)[bd], atol=1e-6)


def test_misclassified_rows_can_train_on_clean_inputs():
    run = linear_run(["raat"], {"raat": {"misclassified": "clean"}})
    step = train_step(run, known_batch(run), 0, 0)
    mis = step.groups["raat.misclassified"]
    assert torch.equal(step.examples["adv"][mis], step.x[mis])
    assert torch.equal(step.examples["attack"][mis], expected_attack(step)[mis])


def test_code_rule_needs_the_full_attack_to_flip_too_the_paper_rule_does_not():
    model = MeanScore(64)
    x = torch.full((1, 1, 8, 8), 0.505)
    y = torch.tensor([0])
    x_reduced = x - 0.01  # wrong
    code = split_rows(model, x, x, x_reduced, y, "code")  # x' = x: the full attack failed
    paper = split_rows(model, x, x, x_reduced, y, "paper")
    assert code.non_boundary.item() and not code.boundary.item()
    assert paper.boundary.item() and not paper.non_boundary.item()


@pytest.mark.parametrize("dicar", ["code", "paper"])
def test_loss_is_ce_on_rebuilt_examples_plus_lam_js(dicar):
    lam = 1.5
    temperature = 0.5 if dicar == "code" else 1.0
    run = linear_run(["raat"], {"raat": {"dicar": dicar, "lam": lam}})
    step, ce, js, _, w = reference_step(run, known_batch(run), dicar, lam, temperature)
    term = next(t for t in step.terms if t.name == "dicar_js")
    assert torch.equal(term.mask, torch.isin(torch.arange(step.size), torch.tensor(PAIRS)))
    assert term.values[term.mask].mean().item() == pytest.approx(js.item(), rel=1e-5)
    assert js.item() > 1e-4
    assert step.loss.item() == pytest.approx((ce + lam * js).item(), rel=1e-5)
    if dicar == "code":
        assert torch.all(w == w[0]) and w[0] >= 0.5
    else:
        assert len(set(w.tolist())) == len(PAIRS)


def test_js_weights_follow_the_runs_seed():
    losses = {}
    for seed in (0, 0, 1):
        run = linear_run(["raat"], {"raat": {"dicar": "paper"}}, seed=seed)
        step = train_step(run, known_batch(run), 0, 0)
        losses.setdefault(seed, []).append(step.loss.item())
    assert losses[0][0] == losses[0][1]
    assert losses[0][0] != losses[1][0]
    a = mixing_weights(8, 0.75, "paper", step_generator(3, 7))
    assert torch.equal(a, mixing_weights(8, 0.75, "paper", step_generator(3, 7)))
    assert not torch.equal(a, mixing_weights(8, 0.75, "paper", step_generator(3, 8)))


def test_beta_draws_are_beta_075():
    draws = sample_beta(20000, 0.75, step_generator(0, 0)).double().numpy()
    assert stats.kstest(draws, stats.beta(0.75, 0.75).cdf).pvalue > 1e-3
    assert draws.min() > 0 and draws.max() < 1
    code = mixing_weights(5, 0.75, "code", step_generator(0, 1))
    assert torch.all(code == code[0]) and 0.5 <= code[0] < 1


def test_empty_pair_set_adds_no_forward_and_zero_term():
    run = linear_run(["raat"])
    batch = known_batch(run)
    batch.x[:] = 0.45  # every first view of class 0 misclassified, class 1 ...
    batch.x[batch.y == 1] = 0.55  # ... and of class 1 too
    step = train_step(run, batch, 0, 0)
    term = next(t for t in step.terms if t.name == "dicar_js")
    assert not term.mask.any() and step.records["raat.dicar_pairs"] == (0.0, "sum")


def _count_forwards(run, batch):
    calls = []
    handle = run.model.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        train_step(run, batch, 0, 0)
    finally:
        handle.remove()
    return len(calls), sum(calls)


def test_forward_passes_per_batch_against_pgd_at():
    b, k = len(SAMPLES), STEPS
    base = linear_run(["pgd-at"])
    assert _count_forwards(base, known_batch(base)) == (k + 1, (k + 1) * b)
    run = linear_run(["raat"])
    # K attack steps on 2B rows; 3 eval indicators (x, x', x''); train CE on 2B; clean 2B; mixed |I|
    assert _count_forwards(run, known_batch(run)) == (k + 6, (k + 5) * 2 * b + len(PAIRS))
    paper = linear_run(["raat"], {"raat": {"reduced": "attack", "boundary": "paper"}})
    # the paper's Eq. 8 attack costs K more passes; its Eq. 9 rule needs no forward at x'
    assert _count_forwards(paper, known_batch(paper)) == (2 * k + 5, (2 * k + 4) * 2 * b + len(PAIRS))
    plus = linear_run(["raat", "mart"])
    # RAAT++: MART's KL adds one forward at the full x' (shared with nothing once x'' replaced rows)
    assert _count_forwards(plus, known_batch(plus)) == (k + 7, (k + 6) * 2 * b + len(PAIRS))


def test_plan_shows_raat_plus_plus_composition():
    result = run_cli(["plan", "--plugin", "raat", "--plugin", "mart", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["roles"] == {"objective": "mart", "adversary": "pgd"}
    assert plan["hooks"]["advcore_data_views"] == ["raat"]
    assert plan["hooks"]["advcore_derive_examples"] == ["raat"]
    assert sorted(plan["hooks"]["advcore_loss_terms"]) == ["mart", "raat"]
    assert plan["hooks"]["advcore_attack_objective"] == ["mart"]


def test_raat_plus_plus_loss_matches_table_4():
    """Table 4: BCE(x' or x'') + lam (JS * 1(correct) + KL(p(x) || p(x')) (1 - p_y(x))), with one
    lam for both regularisers (mart.beta = raat.lam), the paper's DICAR, and MART's constants."""
    lam = 2.0
    run = linear_run(["raat", "mart"], {"raat": {"dicar": "paper", "lam": lam}, "mart": {"beta": lam}})
    step, _, js, x_train, _ = reference_step(run, known_batch(run), "paper", lam, 1.0)
    y = step.y
    with torch.no_grad():
        z_train, z_clean = run.model(x_train), run.model(step.x)
        z_adv = run.model(expected_attack(step))
        q = F.softmax(z_train, 1)
        q_wrong = q.scatter(1, y[:, None], -1.0).max(1).values
        bce = (F.cross_entropy(z_train, y, reduction="none") - torch.log(1.0001 - q_wrong + 1e-12)).mean()
        p, q_adv = F.softmax(z_clean, 1), F.softmax(z_adv, 1)
        kl = (p * (torch.log(p + 1e-12) - torch.log(q_adv + 1e-12))).sum(1)
        kl = (kl * (1.0000001 - p.gather(1, y[:, None]).squeeze(1))).mean()
    assert step.loss.item() == pytest.approx((bce + lam * (js + kl)).item(), rel=1e-5)


def test_group_sizes_are_summed_per_epoch(tmp_path):
    config = tiny_config(["raat"], epochs=1, data={"subset": 64}, eval={"n": 16, "pgd_steps": 1},
                         attack={"steps": 1})
    metrics = train(config, tmp_path / "run", log=lambda line: None)[-1]
    total = sum(metrics[f"raat.{g}"] for g in (NB, BD, MIS))
    assert total == 2 * 64  # every sample, both views, once per epoch
    assert metrics["raat.dicar_pairs"] <= 64


def test_raat_without_adversarial_examples_is_a_clear_error():
    run = tiny_run(["raat", "standard"])
    with pytest.raises(PluginError, match="raat needs adversarial examples but the objective 'standard' makes none.*pgd-at"):
        train_step(run, tiny_batch(run, 4), 0, 0)


def test_js_gradient_stays_finite_when_a_probability_underflows():
    from advcore.losses import js_divergence

    z1 = torch.tensor([[3.0, -200.0, 0.0]], requires_grad=True)
    z2 = torch.tensor([[1.0, -190.0, 0.0]])
    js = js_divergence(F.softmax(z1 / 0.5, 1), F.softmax(z2 / 0.5, 1))
    js.sum().backward()
    assert torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0


def test_hook_contracts_hold():
    from advcore.testing import check_plugin

    check_plugin("raat", attack={"steps": 1})
