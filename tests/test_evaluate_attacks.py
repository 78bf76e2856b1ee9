"""Evaluation attacks against closed-form robustness of a two-class linear model.

For logits (-z/2, z/2) with z = w.x + b the smallest perturbation that flips the label has
Linf norm |z| / ||w||_1 and L2 norm |z| / ||w||_2. With every point in the middle of the
[0, 1] box no clipping interferes, so the exact robust accuracy at eps is the share of
correctly classified points whose margin exceeds eps. White-box attacks must hit it
exactly, black-box ones may only be weaker.
"""

import json

import pytest
import torch
import torch.nn as nn

from advcore.errors import ConfigError
from advcore.evaluation.eval_attacks import attack_flags, parse_attacks
from advcore.evaluation.evaluate import markdown_table, run_attacks


class TwoClassLinear(nn.Module):
    def __init__(self, w: torch.Tensor, b: float):
        super().__init__()
        self.lin = nn.Linear(w.numel(), 1)
        with torch.no_grad():
            self.lin.weight.copy_(w[None])
            self.lin.bias.fill_(b)

    def forward(self, x):
        z = self.lin(x.flatten(1))
        return torch.cat([-z / 2, z / 2], 1)


def linear_problem(n=160, d=64, seed=3):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g)
    x = 0.35 + 0.3 * torch.rand(n, 1, 8, 8, generator=g)
    b = -(x.flatten(1) @ w).median().item()
    model = TwoClassLinear(w, b)
    z = x.flatten(1) @ w + b
    y = (z > 0).long()
    wrong = torch.rand(n, generator=g) < 0.2  # some points are misclassified to begin with
    y[wrong] = 1 - y[wrong]
    return model, x, y, z, w


def exact_accuracy(z, w, y, eps, norm):
    """Closed form: correct and |z| / ||w||_dual > eps; points within 1% of eps are left out."""
    dual = w.abs().sum() if norm == "Linf" else w.norm()
    margin = z.abs() / dual
    keep = (margin / eps - 1).abs() > 0.01
    correct = (z > 0).long() == y
    return keep, (correct & (margin > eps)), correct


@pytest.mark.parametrize("norm,eps", [("Linf", 0.01), ("L2", 0.06)])
def test_white_box_attacks_reach_the_closed_form_robust_accuracy(norm, eps):
    model, x, y, z, w = linear_problem()
    keep, robust, correct = exact_accuracy(z, w, y, eps, norm)
    assert 0.2 < robust[keep].float().mean() < 0.6  # the budget cuts through the margins
    attacks = parse_attacks(["pgd", "cw", "mim", "fgsm", "autoattack"], pgd_steps=20,
                            aa_version="custom", aa_attacks=["apgd-ce"])
    clean, flags, _ = attack_flags(model, x[keep], y[keep], attacks, eps=eps, norm=norm, batch_size=64,
                                   progress=False)
    assert torch.equal(clean, correct[keep])
    for key in ("pgd20_acc", "cw20_acc", "mim20_acc", "fgsm_acc", "autoattack_custom_acc"):
        assert torch.equal(flags[key], robust[keep]), key


@pytest.mark.parametrize("norm,eps", [("Linf", 0.01), ("L2", 0.06)])
def test_square_is_never_stronger_than_the_exact_worst_case(norm, eps):
    model, x, y, z, w = linear_problem()
    keep, robust, correct = exact_accuracy(z, w, y, eps, norm)
    result = run_attacks(model, x[keep], y[keep], eps=eps, norm=norm, attacks=["square-300"], progress=False)
    exact = robust[keep].float().mean().item()
    assert exact <= result["square300_acc"] <= result["clean_acc"]
    assert result["square300_acc"] < result["clean_acc"]  # it does find some adversarial examples


def test_accuracy_falls_with_eps_exactly_as_the_margins_say():
    model, x, y, z, w = linear_problem()
    for eps in (0.003, 0.008, 0.015, 0.03):
        keep, robust, _ = exact_accuracy(z, w, y, eps, "Linf")
        result = run_attacks(model, x[keep], y[keep], eps=eps, attacks=["pgd-10"], progress=False)
        assert result["pgd10_acc"] == pytest.approx(robust[keep].float().mean().item())


def test_results_have_one_key_per_attack_and_the_worst_case():
    model, x, y, z, w = linear_problem()
    result = run_attacks(model, x, y, eps=0.02, attacks=["pgd", "fgsm"], restarts=3, pgd_steps=7, progress=False)
    assert set(result) == {"clean_acc", "pgd7_r3_acc", "fgsm_acc", "worst_case_acc"}
    assert result["worst_case_acc"] <= min(result["pgd7_r3_acc"], result["fgsm_acc"])
    table = markdown_table([dict(result, checkpoint="linear", n=len(y), eps=0.02)])
    header, rule, row = table.strip().splitlines()
    assert header.split("|")[4:7] == [" clean ", " pgd7 r3 ", " fgsm "]
    assert row.startswith("| linear | 160 | 0.02 | " + f"{100 * result['clean_acc']:.2f}")


@pytest.mark.parametrize("bad,words", [
    (dict(names=["pgd-x"]), "unknown attack 'pgd-x'"),
    (dict(names=["deepfool"]), "unknown attack 'deepfool'"),
    (dict(names=["autoattack"], aa_version="custom"), "--aa-attack apgd-ce"),
    (dict(names=["autoattack"], aa_version="fast"), "--aa-version"),
    (dict(names=["autoattack"], aa_version="custom", aa_attacks=["pgd"]), "unknown AutoAttack attack 'pgd'"),
])
def test_bad_attack_names_are_one_line_errors(bad, words):
    names = bad.pop("names")
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")) as err:
        parse_attacks(names, **bad)
    assert "\n" not in str(err.value)


def test_autoattack_resumes_where_it_was_interrupted(tmp_path, monkeypatch):
    """Kill the ensemble in its second component, rerun: finished batches are not attacked again and
    the result equals an uninterrupted run."""
    from pyautoattack import AutoAttack

    model, x, y, z, w = linear_problem(n=48)
    specs = parse_attacks(["autoattack"], aa_version="custom", aa_attacks=["apgd-ce", "square"], square_queries=50)
    _, fresh, _ = attack_flags(model, x, y, specs, eps=0.004, batch_size=8, progress=False)

    original = AutoAttack.run_standard_evaluation
    calls = []

    def counting(self, *args, **kwargs):
        calls.append(list(self.attacks_to_run))
        if interrupt_at and len(calls) == interrupt_at:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(AutoAttack, "run_standard_evaluation", counting)
    interrupt_at = 0
    attack_flags(model, x, y, specs, eps=0.004, batch_size=8, progress=False)
    total = len(calls)
    first_part = sum(1 for c in calls if c == ["apgd-ce"])
    calls.clear()
    interrupt_at = first_part + 3  # two square batches done, the third interrupted
    with pytest.raises(KeyboardInterrupt):
        attack_flags(model, x, y, specs, eps=0.004, batch_size=8, state_dir=tmp_path, progress=False)
    (state_path,) = tmp_path.glob("autoattack-*.json")
    state = json.loads(state_path.read_text())
    assert state["done"] == ["apgd-ce"] and state["current"] == "square"
    calls.clear()
    interrupt_at = 0
    _, resumed, details = attack_flags(model, x, y, specs, eps=0.004, batch_size=8, state_dir=tmp_path,
                                       progress=False)
    assert calls == [["square"]] * (total - first_part - 2)
    assert torch.equal(resumed["autoattack_custom_acc"], fresh["autoattack_custom_acc"])
    by = details["autoattack_custom_by_attack"]
    assert by["square"] == pytest.approx(fresh["autoattack_custom_acc"].float().mean().item())
    assert by["apgd-ce"] >= by["square"]


def test_per_attack_restarts_syntax():
    from advcore.evaluation.eval_attacks import parse_attacks

    attacks = parse_attacks(["pgd-10x5", "cw-40x2", "pgd-20"], restarts=3)
    assert [(a.kind, a.steps, a.restarts, a.key) for a in attacks] == [
        ("pgd", 10, 5, "pgd10_r5_acc"), ("cw", 40, 2, "cw40_r2_acc"), ("pgd", 20, 3, "pgd20_r3_acc")]
    for bad in ("mim-10x2", "pgd-10x0", "fgsm-1x2"):
        with pytest.raises(ConfigError, match="pgd-KxR"):
            parse_attacks([bad])
