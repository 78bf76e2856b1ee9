"""The third-party package runs advcore's conformance kit from its own tests, as any plugin should."""

import torch

from advcore.testing import check_plugin, tiny_batch, tiny_run
from advcore.engine import train_step


def test_label_smoothing_passes_the_conformance_kit():
    report = check_plugin("label-smoothing", options={"smoothing": 0.2})
    assert report.refused == {}  # it adapts targets only, so it runs with every objective and adversary
    assert {"with trades", "with mart", "with free"} <= set(report.passed)


def test_targets_are_smoothed_towards_uniform():
    run = tiny_run(["label-smoothing", "pgd-at"], {"label-smoothing": {"smoothing": 0.2}})
    step = train_step(run, tiny_batch(run, 8), 0, 0)
    expected = torch.full((8, 10), 0.02)
    expected[torch.arange(8), step.y] = 0.82
    assert torch.allclose(step.targets["adv"], expected)
