"""The resume contract through the installed executable: the run's own config, refusals that
change nothing, trustworthy checkpoints, one writer, and bitwise-equal resumes after SIGKILL."""

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from advcore.runtime import checkpoint as ckpt
from cli_exe import advcore, one_line

FIXTURES = Path(__file__).parent / "fixtures"
KILLER = {"PYTHONPATH": f"{FIXTURES}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
TINY = ["--subset", "64", "--seed", "5", "--set", "model.width=8", "--set", "attack.steps=1", "--set", "eval.n=16",
        "--set", "eval.pgd_steps=1", "--set", "data.batch_size=16", "--set", "model.arch=small-cnn"]


def tree_hash(root: Path) -> str:
    """Names and bytes of everything under ``root``: equal before and after means untouched."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        h.update(str(path.relative_to(root)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    """A finished 2-epoch pgd-at run with non-default data and schedule (previous, best, last)."""
    out = tmp_path_factory.mktemp("runs") / "r1"
    proc = advcore("train", "--plugin", "pgd-at", "--epochs", "2", *TINY, "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture
def run_dir(two_epochs, tmp_path):
    out = tmp_path / "r1"
    shutil.copytree(two_epochs, out)
    return out


def test_bare_resume_continues_the_runs_own_config(run_dir):
    before = (run_dir / "config.json").read_text()
    proc = advcore("train", "--out", run_dir, "--resume", "--epochs", "3")
    assert proc.returncode == 0, proc.stderr
    assert "4 batches/epoch" in proc.stdout and "resuming at epoch 3" in proc.stdout  # subset 64, batch 16
    config = json.loads((run_dir / "config.json").read_text())
    assert config["epochs"] == 3 and config["data"]["subset"] == 64 and config["plugins"] == ["pgd-at"]
    assert {k: v for k, v in config.items() if k != "epochs"} == {k: v for k, v in json.loads(before).items()
                                                                  if k != "epochs"}
    history = [json.loads(line) for line in (run_dir / "config_history.jsonl").read_text().splitlines()]
    assert history == [{"resumed_at": {"epoch": 2, "batch": 0}, "changed": {"epochs": {"from": 2, "to": 3}}}]
    assert [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


@pytest.mark.parametrize("args, key", [
    (["--dataset", "mnist"], "data.dataset (run: \"digits\", given: \"mnist\")"),
    (["--plugin", "trades"], "plugins (run: [\"pgd-at\"], given: [\"pgd-at\", \"trades\"])"),
    (["--set", "attack.steps=4"], "attack.steps (run: 1, given: 4)"),
    (["--subset", "32"], "data.subset (run: 64, given: 32)"),
    (["--seed", "6", "--set", "optim.lr=0.2"], "optim.lr (run: 0.1, given: 0.2), seed (run: 5, given: 6)"),
])
def test_a_changing_resume_is_refused_and_the_run_is_untouched(run_dir, args, key):
    before = tree_hash(run_dir)
    proc = advcore("train", "--out", run_dir, "--resume", *args)
    assert proc.returncode == 1
    line = one_line(proc)
    assert key in line and "--allow-change" in line
    assert tree_hash(run_dir) == before


def test_an_explicit_change_is_accepted_and_recorded(run_dir):
    proc = advcore("train", "--out", run_dir, "--resume", "--epochs", "3", "--set", "attack.steps=2", "--allow-change")
    assert proc.returncode == 0, proc.stderr
    entry = json.loads((run_dir / "config_history.jsonl").read_text())
    assert entry["changed"] == {"attack.steps": {"from": 1, "to": 2}, "epochs": {"from": 2, "to": 3}}


def test_restating_the_config_is_not_a_change(run_dir):
    proc = advcore("train", "--plugin", "pgd-at", "--epochs", "2", *TINY, "--out", run_dir, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert not (run_dir / "config_history.jsonl").exists()


def _manifest(run_dir, tag="last"):
    return json.loads((run_dir / "checkpoints" / f"{tag}.json").read_text())


@pytest.mark.parametrize("edit, says", [
    (lambda m: m.update(epoch=1), "last.json was edited or damaged"),
    (lambda m: m.pop("global_step"), "last.json was edited or damaged"),
    (lambda m: m.update(sha256="0" * 64), "last.json was edited or damaged"),
])
def test_an_edited_manifest_is_refused_naming_the_file_and_nothing_changes(run_dir, edit, says):
    manifest = _manifest(run_dir)
    edit(manifest)
    (run_dir / "checkpoints" / "last.json").write_text(json.dumps(manifest))
    before = tree_hash(run_dir)
    proc = advcore("train", "--out", run_dir, "--resume", "--epochs", "3")
    assert proc.returncode == 1
    line = one_line(proc)
    assert says in line and "--fallback" in line
    assert tree_hash(run_dir) == before


def test_fallback_walks_back_past_a_missing_last_and_a_corrupt_previous(run_dir):
    folder = run_dir / "checkpoints"
    (folder / "last.json").unlink()
    refused = advcore("train", "--out", run_dir, "--resume", "--epochs", "3")
    assert refused.returncode == 1 and "last.json is missing; or pass --fallback" in one_line(refused)
    (folder / _manifest(run_dir, "previous")["tensors_file"]).write_bytes(b"truncated")
    best_epoch = _manifest(run_dir, "best")["epoch"]  # the newest intact checkpoint left
    proc = advcore("train", "--out", run_dir, "--resume", "--epochs", "3", "--fallback")
    assert proc.returncode == 0, proc.stderr
    assert "falling back to" in proc.stdout and "best.json" in proc.stdout
    assert f"resuming at epoch {best_epoch + 1}" in proc.stdout


def test_a_second_writer_is_refused_and_a_stale_lock_is_taken_over(run_dir):
    holder = subprocess.Popen(["sleep", "60"])
    try:
        (run_dir / ".advcore.lock").write_text(str(holder.pid))
        proc = advcore("train", "--out", run_dir, "--resume", "--epochs", "3")
        assert proc.returncode == 1 and f"in use by advcore process {holder.pid}" in one_line(proc)
    finally:
        holder.kill()
        holder.wait()
    proc = advcore("train", "--out", run_dir, "--resume", "--epochs", "3")  # its holder is dead now
    assert proc.returncode == 0, proc.stderr
    assert not (run_dir / ".advcore.lock").exists()


def _tensors(out):
    _, t = ckpt.load_checkpoint(out)
    return {k: v for k, v in t.items() if not k.startswith("rng.cuda")}


def _metrics(out):
    return [{k: v for k, v in json.loads(line).items() if not k.endswith("seconds")}  # timings differ run to run
            for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("plugin", ["trades", "mart"])
def test_sigkill_mid_epoch_then_resume_equals_the_uninterrupted_run(tmp_path, plugin):
    args = ["--plugin", plugin, "--plugin", "test-killer", "--epochs", "2", *TINY, "--set", "deterministic=true",
            "--set", "checkpoint.every_steps=2"]
    full, split = tmp_path / "full", tmp_path / "split"
    assert advcore("train", *args, "--out", full, env=KILLER).returncode == 0
    killed = advcore("train", *args, "--out", split, env={**KILLER, "ADVCORE_TEST_KILL_AT": "1:2",
                                                          "ADVCORE_TEST_KILL_SIGNAL": "KILL"})
    assert killed.returncode == -9
    manifest = _manifest(split)
    assert (manifest["epoch"], manifest["batch"]) == (1, 2)  # the in-epoch checkpoint after global step 6
    resumed = advcore("train", "--out", split, "--resume", env=KILLER)  # takes over the dead process's lock
    assert resumed.returncode == 0, resumed.stderr
    a, b = _tensors(full), _tensors(split)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert _metrics(full) == _metrics(split)


# --- every built-in plugin: an in-epoch checkpoint resumes bit for bit (in-process, cheap) ----------

BUILT_IN = ["standard", "pgd-at", "trades", "mart", "alp", "awp", "cons-at", "difficulty", "fast-atta", "fgsm-rs",
            "free", "he", "iaat", "raat", "reweight", "adaptive-targets", "hat"]


class _Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs, not even the trainer's signal handling."""


class _KillAtStep:
    def __init__(self, at: tuple[int, int] | None):
        self.at = at

    from advcore import hookimpl

    @hookimpl
    def advcore_after_step(self, run, step):
        if (step.epoch, step.batch) == self.at:
            raise _Killed


@pytest.mark.parametrize("plugin", BUILT_IN)
def test_every_built_in_plugin_resumes_bitwise_from_an_in_epoch_checkpoint(tmp_path, plugin, monkeypatch):
    import advcore.engine.loop as trainer_build  # _train looks build_run up here
    from advcore.kernel.plugins import Installed, resolve
    from advcore.testing import tiny_config

    config = tiny_config([plugin], epochs=2, deterministic=True, data={"subset": 64, "batch_size": 16},
                         eval={"n": 16, "pgd_steps": 1}, attack={"steps": 1}, checkpoint={"every_steps": 2})
    original = trainer_build.build_run

    def with_killer(at):
        def build(cfg, out, **kw):
            if cfg.plugins != [plugin]:  # e.g. HAT's own standard network: left alone
                return original(cfg, out, **kw)
            kw.pop("plugins", None)
            return original(cfg, out, plugins=resolve(cfg.plugins) + [Installed("kill", "tests", "0", module=_KillAtStep(at))],
                            **kw)
        return build

    monkeypatch.setattr(trainer_build, "build_run", original)  # restored after the test
    trainer_build.build_run = with_killer(None)  # the same composition, never killed
    trainer_build.train(config, tmp_path / "full", log=lambda _: None)
    trainer_build.build_run = with_killer((1, 3))  # dies in the last batch of epoch 2, after an in-epoch checkpoint
    with pytest.raises(_Killed):
        trainer_build.train(config, tmp_path / "split", log=lambda _: None)
    manifest = _manifest(tmp_path / "split")
    assert manifest["epoch"] == 1 and 1 <= manifest["batch"] <= 3, (manifest["epoch"], manifest["batch"])
    trainer_build.build_run = with_killer(None)
    trainer_build.train(config, tmp_path / "split", resume=True, log=lambda _: None)
    a, b = _tensors(tmp_path / "full"), _tensors(tmp_path / "split")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert _metrics(tmp_path / "full") == _metrics(tmp_path / "split")
