"""Analyses against closed forms: directional margins, eps sweeps, corruptions, plots, foreign weights."""

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from advcore.evaluation.corruptions import evaluate_corruptions
from advcore.data.datasets import DataError
from advcore.errors import CheckpointError
from advcore.evaluation.margin import directional_margin, initial_directions, margin_analysis, margin_summary
from advcore.models.files import model_from_state_dict, read_state_dict
from advcore.models.architectures import build_model
from advcore.analyses.plots import plot_margins, plot_sweep, plot_tradeoff, plot_training_curves
from advcore.analyses.sweeps import eps_sweep, parse_values, steps_sweep


class Linear(nn.Module):
    def __init__(self, d, classes, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.lin = nn.Linear(d, classes)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(classes, d, generator=g))
            self.lin.bias.copy_(torch.randn(classes, generator=g))

    def forward(self, x):
        return self.lin(x.flatten(1))


def test_directional_margin_of_a_linear_classifier_matches_the_closed_form():
    """Along r the top class f changes at the first alpha (either sign) where some k overtakes it:
    alpha_k = (z_f - z_k) / ((w_k - w_f) . r), so the margin is min_k (z_f - z_k) / |(w_k - w_f) . r|."""
    model = Linear(16, 4)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(40, 1, 4, 4, generator=g)
    r = torch.randn(40, 16, generator=g)
    r = (r / r.norm(dim=1, keepdim=True)).view_as(x)
    w = model.lin.weight.detach()
    z = model(x).detach()
    top = z.argmax(1)
    expected = []
    for i in range(40):
        f = top[i]
        rates = (w - w[f]) @ r[i].flatten()
        gaps = z[i, f] - z[i]
        candidates = [gaps[k] / rates[k].abs() for k in range(4) if k != f and rates[k] != 0]
        expected.append(min(candidates).item())
    expected = torch.tensor(expected)
    measured = directional_margin(model, x, r, max_alpha=1e3)
    keep = expected < 1e3
    assert keep.sum() >= 35
    assert torch.allclose(measured[keep], expected[keep], rtol=1e-4)


def test_two_class_margin_is_distance_to_the_hyperplane_along_r():
    model = Linear(16, 2, seed=4)
    x = torch.rand(30, 1, 4, 4)
    r = torch.randn(30, 1, 4, 4)
    r = r / r.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    w = model.lin.weight.detach()
    b = model.lin.bias.detach()
    u, c = w[1] - w[0], b[1] - b[0]
    expected = (x.flatten(1) @ u + c).abs() / (r.flatten(1) @ u).abs()
    measured = directional_margin(model, x, r, max_alpha=1e4)
    assert torch.allclose(measured, expected, rtol=1e-4)
    summary = margin_summary(measured, reference=expected.median().item(), bins=5)
    assert summary["median"] == pytest.approx(measured.median().item())
    assert sum(summary["histogram"]["counts"]) == 30
    assert summary["above_reference"] == pytest.approx((expected > expected.median()).float().mean().item(), abs=0.04)


def test_margin_never_flipping_is_censored_not_invented():
    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = nn.Parameter(torch.tensor([0.0, 1.0]))

        def forward(self, x):
            return self.bias.expand(x.shape[0], 2)

    x = torch.rand(5, 1, 4, 4)
    r = torch.ones_like(x) / 4
    m = directional_margin(Constant(), x, r, max_alpha=10.0)
    assert torch.isinf(m).all()
    assert margin_summary(m)["censored"] == 5 and margin_summary(m)["median"] is None


def test_initial_directions_are_unit_pgd_directions_of_the_standard_model():
    model = Linear(16, 2, seed=2)
    x = 0.3 + 0.4 * torch.rand(12, 1, 4, 4)
    y = model(x).argmax(1)
    r = initial_directions(model, x, y, eps=0.05, steps=10)
    assert torch.allclose(r.flatten(1).norm(dim=1), torch.ones(12), atol=1e-5)
    # for a linear model PGD ends at the vertex -eps * sign(w_y - w_other): r is that sign pattern / sqrt(d)
    w = model.lin.weight.detach()
    towards_other = torch.where(y[:, None] == 1, w[0] - w[1], w[1] - w[0])
    assert torch.allclose(r.flatten(1), towards_other.sign() / 4, atol=1e-5)


def test_margin_analysis_and_its_plot(tmp_path):
    standard, robust = Linear(16, 3, seed=5), Linear(16, 3, seed=6)
    x = torch.rand(20, 1, 4, 4)
    y = standard(x).argmax(1)
    result = margin_analysis(standard, robust, x, y, eps=0.05, steps=5, progress=False)
    assert result["robust"]["reference"] == pytest.approx(0.05 * 4)  # Linf eps as an L2 radius: eps * sqrt(d)
    drawn = plot_margins(result, tmp_path / "margins.png")
    assert (tmp_path / "margins.png").stat().st_size > 5000
    saved = json.loads((tmp_path / "margins.json").read_text())
    assert saved["medians"] == drawn["medians"]
    assert len(saved["margins"]["robust"]) == 20


def test_eps_sweep_follows_the_closed_form_and_the_plot_keeps_the_series(tmp_path):
    model = Linear(64, 2, seed=7)
    x = 0.35 + 0.3 * torch.rand(100, 1, 8, 8)
    z = model(x).detach()
    y = z.argmax(1)
    w = model.lin.weight.detach()
    margin = (z[:, 1] - z[:, 0]).abs() / (w[1] - w[0]).abs().sum()
    grid = [0.0, 0.004, 0.01, 0.03]
    sweep = eps_sweep(model, x, y, grid, steps=10, progress=False)
    assert sweep["x"] == grid
    assert sweep["acc"] == pytest.approx([(margin > e).float().mean().item() for e in grid])
    steps = steps_sweep(model, x, y, [1, 5], eps=0.01, progress=False)
    assert steps["x"] == [1, 5] and steps["acc"][1] == pytest.approx((margin > 0.01).float().mean().item())
    drawn = plot_sweep({"linear": sweep, "twice": dict(sweep, acc=[a / 2 for a in sweep["acc"]])},
                       tmp_path / "sweep.png", reference=0.01)
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved == json.loads(json.dumps(drawn))
    assert saved["series"]["twice"]["acc"][0] == pytest.approx(0.5)


def test_parse_values_reads_fractions():
    assert parse_values("0, 2/255,8/255") == pytest.approx([0.0, 2 / 255, 8 / 255])
    assert parse_values("5,10", int) == [5, 10]
    with pytest.raises(Exception, match="comma-separated"):
        parse_values("8/zero")


def test_training_curves_and_tradeoff_plots_hold_the_metrics(tmp_path):
    records = [{"epoch": e, "train_loss": 2.0 / e, "clean_acc": 0.5 + e / 10, "robust_acc": 0.2 + e / 20,
                "lr": 0.1, "seconds": 1.0, "iaat.boundary_loss": 1.0 / e, "radius": 0.01 * e} for e in (1, 2, 3)]
    drawn = plot_training_curves({"run-a": records, "run-b": records[:2]}, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").is_file()
    a = drawn["runs"]["run-a"]
    assert a["accuracy"]["clean_acc"] == {"epoch": [1, 2, 3], "value": [0.6, 0.7, 0.8]}
    assert set(a["loss"]) == {"train_loss", "iaat.boundary_loss"}
    assert a["other"]["radius"]["value"] == [0.01, 0.02, 0.03]
    assert "lr" not in a["other"] and drawn["runs"]["run-b"]["accuracy"]["robust_acc"]["epoch"] == [1, 2]
    points = [{"label": "at", "clean_acc": 0.8, "autoattack_acc": 0.4}, {"label": "trades", "clean_acc": 0.75,
                                                                           "autoattack_acc": 0.45}]
    plot_tradeoff(points, tmp_path / "tradeoff.png", y="autoattack_acc")
    assert json.loads((tmp_path / "tradeoff.json").read_text())["points"] == points


def _corruption_folder(tmp_path, images, labels):
    """Five severities of additive noise in the CIFAR-10-C layout [5*M, H, W, C]."""
    g = np.random.default_rng(0)
    base = images.permute(0, 2, 3, 1).numpy().astype(np.int16)
    blocks = [np.clip(base + g.integers(-40 * s, 40 * s + 1, base.shape), 0, 255) for s in range(1, 6)]
    noise = np.concatenate(blocks).astype(np.uint8)
    np.save(tmp_path / "noise.npy", noise)
    np.save(tmp_path / "dark.npy", (np.concatenate([base] * 5) // 2).astype(np.uint8))
    np.save(tmp_path / "labels.npy", np.concatenate([labels.numpy()] * 5))
    return noise


def test_corruption_accuracy_per_severity(tmp_path):
    model = build_model("small-cnn", num_classes=10, in_channels=1, image_size=8, width=4).eval()
    images = torch.randint(0, 256, (30, 1, 8, 8), dtype=torch.uint8)
    with torch.no_grad():
        labels = model(images.float() / 255).argmax(1)
    labels[:10] = (labels[:10] + 1) % 10
    noise = _corruption_folder(tmp_path, images, labels)
    result = evaluate_corruptions(model, tmp_path, progress=False)
    with torch.no_grad():
        for s in range(5):
            x = torch.from_numpy(noise[s * 30:(s + 1) * 30]).permute(0, 3, 1, 2).float() / 255
            assert result["noise"][str(s + 1)] == pytest.approx((model(x).argmax(1) == labels).float().mean().item())
    assert set(result) == {"noise", "dark", "mean_acc"}
    assert result["mean_acc"] == pytest.approx((result["noise"]["mean"] + result["dark"]["mean"]) / 2)
    first = evaluate_corruptions(model, tmp_path, n=7, progress=False)
    with torch.no_grad():
        x = torch.from_numpy(noise[30:37]).permute(0, 3, 1, 2).float() / 255
        assert first["noise"]["2"] == pytest.approx((model(x).argmax(1) == labels[:7]).float().mean().item())


def test_corruption_folder_problems_are_one_line(tmp_path):
    model = build_model("small-cnn", num_classes=10, in_channels=1, image_size=8, width=4)
    with pytest.raises(DataError, match="labels.npy not found"):
        evaluate_corruptions(model, tmp_path)
    np.save(tmp_path / "labels.npy", np.zeros(10, np.int64))
    np.save(tmp_path / "fog.npy", np.zeros((10, 8, 8, 1), np.uint8))
    with pytest.raises(DataError, match="10 images but labels.npy has 7 labels"):
        np.save(tmp_path / "labels.npy", np.zeros(7, np.int64))
        evaluate_corruptions(model, tmp_path)
    np.save(tmp_path / "labels.npy", np.zeros(10, np.int64))
    np.save(tmp_path / "fog.npy", np.zeros((10, 32, 32, 3), np.uint8))
    with pytest.raises(DataError, match="do not fit the model"):
        evaluate_corruptions(model, tmp_path)


# RobustBench names, written out by hand from its model definitions (not derived from advcore's)
def _robustbench_wrn_names(name: str) -> str:
    parts = name.split(".")
    if parts[0] == "stem":
        return "conv1." + ".".join(parts[1:])
    if parts[0] == "final_bn":
        return "bn1." + ".".join(parts[1:])
    if parts[0] == "head":
        return "fc." + ".".join(parts[1:])
    stage, block, rest = parts[1], parts[2], parts[3:]
    rest = ["convShortcut" if rest[0] == "shortcut" else rest[0], *rest[1:]]
    return f"block{int(stage) + 1}.layer.{block}." + ".".join(rest)


def _robustbench_preact_names(name: str) -> str:
    parts = name.split(".")
    if parts[0] == "stem":
        return "conv1." + ".".join(parts[1:])
    if parts[0] == "final_bn":
        return "bn." + ".".join(parts[1:])
    if parts[0] == "head":
        return "linear." + ".".join(parts[1:])
    stage, block, rest = parts[1], parts[2], parts[3:]
    if rest[0] == "shortcut":
        rest = ["shortcut", "0", *rest[1:]]
    return f"layer{int(stage) + 1}.{block}." + ".".join(rest)


@pytest.mark.parametrize("arch,width,rename", [("wrn", 1, _robustbench_wrn_names),
                                               ("preact-resnet18", 4, _robustbench_preact_names)])
def test_robustbench_checkpoints_load_with_weights_only(tmp_path, arch, width, rename):
    source = build_model(arch, num_classes=10, in_channels=3, image_size=8, width=width).eval()
    for m in source.modules():  # non-trivial BatchNorm statistics so a wrong mapping shows
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    state = {"module." + rename(k): v for k, v in source.state_dict().items()}
    state["module.mu"] = torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1)
    state["module.sigma"] = torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    torch.save({"state_dict": state, "epoch": 100}, tmp_path / "model.pt")
    model = model_from_state_dict(read_state_dict(tmp_path / "model.pt"), arch=arch, num_classes=10,
                                  in_channels=3, image_size=8, width=width).eval()
    x = torch.rand(4, 3, 8, 8)
    mu, sigma = state["module.mu"], state["module.sigma"]
    with torch.no_grad():
        assert torch.allclose(model(x), source((x - mu) / sigma), atol=1e-5)


class Payload:
    """Stands for an arbitrary pickled object: loading it would run its class's code."""


def test_state_dict_files_never_unpickle_objects(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        read_state_dict(tmp_path / "evil.pt")
    model = build_model("small-cnn", num_classes=10, in_channels=1, image_size=8, width=4)
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="does not fit --arch small-cnn"):
        model_from_state_dict(read_state_dict(tmp_path / "plain.pt"), arch="small-cnn", num_classes=10,
                              in_channels=1, image_size=8, width=8)
