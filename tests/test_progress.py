"""The training bar shows the running loss, the per-epoch evaluation has its own bar; both
come from advcore.progress and only when bars are on (ADVCORE_PROGRESS), through the installed
``advcore train``."""

from __future__ import annotations

import re

import pytest

from cli_exe import advcore

# digits, 160 samples in batches of 16: 10 batches, so the loss is shown at batch 10 (and the last)
RUN = ["train", "--plugin", "standard", "--dataset", "digits", "--epochs", "1", "--set", "data.subset=160",
       "--set", "data.batch_size=16", "--set", "model.width=8", "--set", "eval.n=32", "--set", "eval.pgd_steps=1",
       "--set", "data.eval_batch_size=8", "--set", "device=cpu"]


@pytest.mark.parametrize("setting", ["1", "0"])
def test_training_shows_the_running_loss_and_an_evaluation_bar_only_with_bars_on(tmp_path, setting):
    # TQDM_MININTERVAL/MINITERS: every update drawn, so a busy machine cannot skip the redraws checked below
    env = {"ADVCORE_PROGRESS": setting, "COLUMNS": "160", "TQDM_MININTERVAL": "0", "TQDM_MINITERS": "1"}
    proc = advcore(*RUN, "--out", tmp_path / "run", env=env)
    assert proc.returncode == 0, proc.stderr
    final = re.search(r"epoch 1/1\s+loss (\d\.\d{4})", proc.stdout)
    assert final, proc.stdout
    bars = proc.stderr.replace("\r", "\n").splitlines()  # tqdm redraws its line with carriage returns
    losses = [m.group(1) for line in bars if (m := re.match(r"epoch 1: .*loss=(\d\.\d{4})\]$", line))]
    if setting == "0":
        assert "loss=" not in proc.stderr and "eval epoch" not in proc.stderr and "it/s" not in proc.stderr
        return
    assert losses, proc.stderr
    assert losses[-1] == final.group(1)  # the bar's last running mean is the epoch's train loss
    assert any(re.match(r"epoch 1: .*\| \d+/10 \[\d\d:\d\d<\d\d:\d\d, ", line) for line in bars)  # [elapsed<ETA]
    assert any(re.match(r"eval epoch 1: .*\| \d/4 \[", line) for line in bars), bars  # 32 samples in batches of 8
