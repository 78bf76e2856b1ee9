"""Runs that degenerate to chance: paper 004's composition trains, and the trainer warns when one sits there.

The composition test is the real default command of issue 21 (digits, 7 epochs): it printed
loss 0.0000 and 10.03% accuracy from epoch 2 on while reweighting started at epoch 0.
"""

import json
import math
import os
import subprocess
import sys

import torch

from advcore.testing import tiny_run
from advcore.engine import chance_warning

torch.set_num_threads(1)


def user_runs(*args):
    proc = subprocess.run([sys.executable, "-m", "advcore", *args], capture_output=True, text=True,
                          env=dict(os.environ, ADVCORE_PROGRESS="0", OMP_NUM_THREADS="1"))
    return proc.returncode, proc.stdout + proc.stderr


def test_paper_004_composition_trains_on_the_default_run(tmp_path):
    code, output = user_runs("train", "--plugin", "fast-atta", "--plugin", "reweight", "--plugin",
                             "adaptive-targets", "--epochs", "7", "--seed", "0", "--out", str(tmp_path))
    assert code == 0, output
    epochs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(epochs) == 7 and all(m["train_loss"] > 0.05 for m in epochs)
    # reweighting and adaptive targets are both active in epochs 6-7 (warm-up 5); digits has 10 classes
    assert epochs[-1]["clean_acc"] > 0.5 and epochs[-1]["robust_acc"] > 0.2
    assert "reweight.effective_fraction" in epochs[-1] and "warning" not in output


def test_a_loss_at_ln_k_warns_and_names_the_awp_remedy():
    run = tiny_run(["awp"])
    k = run.info.num_classes
    line = chance_warning(run, {"epoch": 3, "train_loss": math.log(k) + 0.005})
    assert line.startswith(f"advcore: warning: epoch 3 train loss {math.log(k) + 0.005:.4f} sat at ln({k})")
    assert "options.awp.gamma" in line and "options.awp.warmup=2" in line and "\n" not in line
    assert chance_warning(run, {"epoch": 3, "train_loss": 0.9 * math.log(k)}) is None  # learning
    # passing through ln K on the way down (gamma 0.002, epoch 2: 46.8% clean) is not a stall
    assert chance_warning(run, {"epoch": 2, "train_loss": math.log(k), "clean_acc": 0.468}) is None
    assert chance_warning(run, {"epoch": 5, "train_loss": math.log(k), "clean_acc": 0.195}) is not None


def test_a_zero_loss_at_chance_accuracy_warns_without_a_hint_when_no_plugin_declares_one():
    run = tiny_run(["pgd-at"])
    k = run.info.num_classes
    line = chance_warning(run, {"epoch": 2, "train_loss": 0.0, "clean_acc": 1.0 / k})
    assert "is 0 with near-chance accuracy (10.0%)" in line and "check the learning rate" in line
    assert chance_warning(run, {"epoch": 2, "train_loss": 0.0, "clean_acc": 0.9}) is None  # fitted, not degenerate
    # the twin of hard-instances/cifar10-atta-reweight: loss 0.0000 from epoch 5, 19.8% clean at the end
    assert "near-chance accuracy (19.8%)" in chance_warning(run, {"epoch": 10, "train_loss": 0.0, "clean_acc": 0.198})
    assert chance_warning(run, {"epoch": 9, "train_loss": 0.0}) is None  # not evaluated: no accuracy to judge


def test_chance_accuracy_after_the_first_epoch_warns_whatever_the_loss():
    """The twin of hat/cifar10-hat at its peak lr 0.21: loss 3.43 (above ln 10), 9.0% clean at epoch 10."""
    run = tiny_run(["pgd-at"])
    line = chance_warning(run, {"epoch": 10, "train_loss": 3.4308, "clean_acc": 0.09})
    assert "left clean accuracy at chance (9.0%) after 10 epochs" in line
    assert chance_warning(run, {"epoch": 1, "train_loss": 3.0, "clean_acc": 0.09}) is None  # one epoch: too early
    assert chance_warning(run, {"epoch": 10, "train_loss": 1.2, "clean_acc": 0.35}) is None  # weak, not degenerate


def test_a_reweighting_collapse_names_the_warm_up():
    run = tiny_run(["pgd-at", "reweight"])
    line = chance_warning(run, {"epoch": 10, "train_loss": 0.0, "clean_acc": 0.096})
    assert "reweight: true-label weights fell into their fixed point" in line and "options.reweight.warmup" in line
