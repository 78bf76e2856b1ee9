"""Faults: signals, NaN, corrupt or unwritable checkpoints -- nothing lost, nothing silent."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from advcore.runtime import checkpoint as ckpt
from advcore import hookimpl
from advcore.errors import CheckpointError, TrainingError
from advcore.kernel.plugins import Installed, resolve
from advcore.testing import tiny_config
from advcore.engine import train

FIXTURES = Path(__file__).parent / "fixtures"
ARGS = ["--plugin", "trades", "--plugin", "test-killer", "--epochs", "3", "--subset", "256", "--seed", "3",
        "--set", "deterministic=true", "--set", "attack.steps=2", "--set", "model.width=8",
        "--set", "data.batch_size=32", "--set", "eval.n=64", "--set", "eval.pgd_steps=3", "--set", "model.arch=small-cnn"]


def advcore(*args, kill_at=None):
    env = dict(os.environ, ADVCORE_PROGRESS="0", PYTHONPATH=f"{FIXTURES}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    env.pop("ADVCORE_TEST_KILL_AT", None)
    if kill_at:
        env["ADVCORE_TEST_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-m", "advcore", *args], capture_output=True, text=True, env=env, timeout=600)


def tensors(out):
    _, t = ckpt.load_checkpoint(out)
    return {k: v for k, v in t.items() if not k.startswith("rng.cuda")}


def test_sigterm_mid_epoch_checkpoints_and_resume_is_bitwise_equal(tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    assert advcore("train", *ARGS, "--out", str(full)).returncode == 0
    stopped = advcore("train", *ARGS, "--out", str(split), kill_at="1:3")
    assert stopped.returncode == 130
    message = stopped.stderr.strip().splitlines()
    assert len(message) == 1 and "stopped by SIGTERM at epoch 2 batch 4" in message[0]
    assert f"advcore train --out {split} --resume" in message[0]
    manifest = json.loads((split / "checkpoints" / "last.json").read_text())
    assert (manifest["epoch"], manifest["batch"]) == (1, 4)
    resumed = advcore("train", *ARGS, "--out", str(split), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a, b = tensors(full), tensors(split)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    metrics = lambda d: [{k: v for k, v in json.loads(l).items() if not k.endswith("seconds")}  # noqa: E731
                         for l in (d / "metrics.jsonl").read_text().splitlines()]
    assert metrics(full) == metrics(split)


class NaNTerm:
    @hookimpl
    def advcore_loss_terms(self, step):
        if step.batch == 2:
            return [step.term("exploding", torch.full((step.size,), float("nan")))]


def test_nan_loss_stops_naming_step_terms_and_last_good_checkpoint(tmp_path):
    config = tiny_config(["pgd-at"], epochs=2)
    plugins = resolve(["pgd-at"]) + [Installed("nan", "tests", "0", module=NaNTerm())]
    import advcore.engine.loop as trainer_build  # _train looks build_run up here
    original = trainer_build.build_run
    trainer_build.build_run = lambda cfg, out, **kw: original(cfg, out, plugins=plugins, **{k: v for k, v in kw.items() if k != "plugins"})
    try:
        with pytest.raises(TrainingError) as err:
            train(config, tmp_path, log=lambda _: None)
    finally:
        trainer_build.build_run = original
    message = str(err.value)
    assert "loss became nan at epoch 0 batch 2" in message
    assert "exploding=nan" in message and "ce_adv=" in message
    assert "last good checkpoint: none written yet" in message and "\n" not in message


def test_disk_full_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    train(tiny_config(["standard"], epochs=1), tmp_path, log=lambda _: None)
    before = tensors(tmp_path)

    def full_disk(tensors, path):
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "save_file", full_disk)
    with pytest.raises(CheckpointError, match="No space left on device; the previous checkpoint was kept"):
        ckpt.save_checkpoint(tmp_path / "checkpoints" / "last", {"x": torch.zeros(1)}, {"epoch": 9})
    after = tensors(tmp_path)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))


def test_corrupt_last_checkpoint_falls_back_to_previous_when_asked(tmp_path):
    config = tiny_config(["standard"], epochs=3)
    train(config, tmp_path, log=lambda _: None, stop_after=2)
    manifest = json.loads((tmp_path / "checkpoints" / "last.json").read_text())
    (tmp_path / "checkpoints" / manifest["tensors_file"]).write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="corrupt or truncated.*pass --fallback"):
        train(config, tmp_path, resume=True, log=lambda _: None)
    lines = []
    history = train(config, tmp_path, resume=True, fallback=True, log=lines.append)
    assert any("falling back" in line for line in lines)
    assert [m["epoch"] for m in history] == [1, 2, 3]  # epoch 2 is redone from the epoch-1 checkpoint


def _small_filesystem(path: Path, size: str) -> bool:
    """Mount a tmpfs of ``size`` at ``path`` (needs root and a mount namespace that allows it)."""
    path.mkdir()
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_a_full_disk_through_the_executable_is_one_line_and_keeps_the_checkpoint(tmp_path):
    disk = tmp_path / "disk"
    if not _small_filesystem(disk, "160k"):
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        out = disk / "run"
        args = ["--plugin", "standard", "--epochs", "4", "--subset", "32", "--set", "model.width=4",
                "--set", "eval.n=8", "--set", "eval.pgd_steps=1", "--set", "data.batch_size=16", "--out", str(out)]
        exe = str(Path(sys.executable).with_name("advcore"))
        proc = subprocess.run([exe, "train", *args], capture_output=True, text=True, timeout=600,
                              env=dict(os.environ, ADVCORE_PROGRESS="0"))
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr
        assert "No space left on device; the previous checkpoint was kept" in lines[0]
        if (out / "checkpoints" / "last.json").exists():  # what was committed before the disk filled loads
            ckpt.load_checkpoint(out)
        assert not list((out / "checkpoints").glob("*.tmp"))
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_signals_while_checkpoints_are_written_leave_a_loadable_run(tmp_path):
    """Two SIGTERMs in quick succession while a checkpoint is written every step: exit 130 in
    one line, and the run resumes (the interrupted write never replaced a manifest half-way)."""
    out = tmp_path / "run"
    exe = str(Path(sys.executable).with_name("advcore"))
    env = dict(os.environ, ADVCORE_PROGRESS="0", OMP_NUM_THREADS="1")
    args = ["--plugin", "standard", "--epochs", "3", "--subset", "256", "--set", "model.width=8", "--set", "eval.n=16",
            "--set", "data.batch_size=16", "--set", "checkpoint.every_steps=1"]
    proc = subprocess.Popen([exe, "train", *args, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    deadline = time.time() + 120
    while not (out / "checkpoints" / "previous.json").exists() and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    resumed = subprocess.run([exe, "train", "--out", str(out), "--resume", "--fallback"], capture_output=True,
                             text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
