"""Per-epoch evaluation cost: a short default run spends little of its time evaluating."""

from __future__ import annotations

import json

import torch

from advcore.runtime import checkpoint as ckpt
from advcore.kernel.config import RunConfig
from advcore.data.datasets import held_out_indices, load_dataset
from advcore.testing import tiny_config
from advcore.engine import train


def test_default_digits_run_spends_under_a_fifth_of_its_passes_evaluating():
    """Defaults arithmetic for `advcore train --plugin pgd-at` on digits (5 epochs).

    Training costs K + 1 forward/backward passes per training sample and epoch; evaluation
    1 (clean) + pgd_steps + 1 (adversarial check) per evaluated sample. With eval.n for every
    epoch this was 29% of the passes; now only the last epoch evaluates eval.n samples.
    """
    c = RunConfig()
    train_set, test_set, _ = load_dataset(c.data.dataset)
    full = min(c.eval.n, len(test_set))
    small = min(c.eval.epoch_n, full)
    train_passes = c.epochs * len(train_set) * (c.attack.steps + 1)
    per_sample = c.eval.pgd_steps + 2
    eval_passes = ((c.epochs - 1) * small + full + small) * per_sample  # + the final selection subset
    old = c.epochs * full * per_sample
    assert old / (old + train_passes) > 0.25  # what the issue measured: evaluation dominated
    assert eval_passes / (eval_passes + train_passes) < 0.2


def test_epoch_evaluation_uses_the_subset_and_the_last_epoch_the_full_set(tmp_path):
    lines = []
    config = tiny_config(["pgd-at"], epochs=3, eval={"n": 16, "epoch_n": 8, "pgd_steps": 1})
    history = train(config, tmp_path, log=lines.append)
    assert [m["eval_n"] for m in history] == [8, 8, 16]
    assert "select_robust_acc" in history[-1] and "select_robust_acc" not in history[0]
    for m in history:
        assert 0 < m["eval_seconds"] < m["seconds"]
        assert (8 * m["robust_acc"]).is_integer() if m["eval_n"] == 8 else (16 * m["robust_acc"]).is_integer()
    assert (8 * history[-1]["select_robust_acc"]).is_integer()
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert "(eval " in epoch_lines[0] and "n=8)" in epoch_lines[0] and "n=16)" in epoch_lines[-1]
    scores = [m.get("select_robust_acc", m["robust_acc"]) for m in history]
    manifest, _ = ckpt.load_checkpoint(tmp_path / "checkpoints" / "best")
    assert manifest["epoch"] == scores.index(max(scores)) + 1
    written = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert written == history


def test_the_per_epoch_samples_are_among_the_final_ones():
    small, full = held_out_indices(359, 64, 0), held_out_indices(359, 359, 0)
    assert set(small.tolist()) <= set(full.tolist()) and torch.unique(small).numel() == 64


def test_epoch_n_none_evaluates_eval_n_every_epoch(tmp_path):
    config = tiny_config(["pgd-at"], epochs=2, eval={"n": 8, "epoch_n": None, "pgd_steps": 1})
    history = train(config, tmp_path, log=lambda _: None)
    assert [m["eval_n"] for m in history] == [8, 8] and "select_robust_acc" not in history[-1]


def test_recipes_that_report_the_best_checkpoint_evaluate_every_epoch_in_full():
    """Early stopping as the papers do it: the per-epoch evaluation is the whole eval.n set."""
    from advcore.kernel.config import load_config
    from advcore.cli.recipes import all_recipes

    recipes = all_recipes()
    best = [r for r in recipes if r.checkpoint == "best"]
    last = [r for r in recipes if r.checkpoint != "best"]
    assert best and last
    for twin in (False, True):
        assert load_config(base=best[0].run_config(twin=twin)).eval.epoch_n is None
        assert load_config(base=last[0].run_config(twin=twin)).eval.epoch_n == RunConfig().eval.epoch_n
