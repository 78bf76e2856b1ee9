"""Two CPU processes (torchrun, gloo) compute what one process computes on the same global batches.

A small plugin written here (registered through a temporary dist-info entry point) keeps
per-sample state, weights samples by it and adds a masked term, so the check covers state
exchange, global loss denominators and DDP gradients at once. It attacks deterministically
(no random start) so that both runs see the same examples; the model is the small CNN,
which has no BatchNorm (per-rank batch statistics would differ from one global batch).
"""

from __future__ import annotations

import importlib
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from advcore.runtime.checkpoint import load_checkpoint
from advcore.kernel.config import load_config
from advcore.engine import train

PLUGIN = '''
"""Test plugin: per-sample state, sample weights from it, a masked term, a deterministic attack."""
import torch
from advcore import AttackObjective, PluginInfo, hookimpl
from advcore.attacks import as_budget, ce_loss, input_gradient, project

LOSS, VISITS = "tally.loss", "tally.visits"


@hookimpl
def advcore_plugin_info():
    return PluginInfo(summary="DDP test plugin", roles=("objective", "adversary"))


@hookimpl
def advcore_on_run_start(run):
    run.state.tensor(LOSS)
    run.state.tensor(VISITS, dtype=torch.int64)


@hookimpl
def advcore_attack_objective(run):
    return AttackObjective("tally", loss=ce_loss, init="none", mode="eval")


@hookimpl
def advcore_generate_adversarial(step, objective):
    grad, _ = input_gradient(step.model, step.x, step.y, objective.loss)
    scale = grad.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return project(step.x + as_budget(step.eps, step.x) * grad / scale, step.x, step.eps)


@hookimpl
def advcore_sample_weights(run, step):
    return 1.0 + run.state[LOSS][step.index]


@hookimpl
def advcore_loss_terms(step):
    even = step.y % 2 == 0
    return [step.term("ce_adv", step.supervised_loss("adv")),
            step.term("ce_clean_even", step.supervised_loss("clean"), 0.5, mask=even)]


@hookimpl
def advcore_after_step(run, step):
    loss, visits = run.state[LOSS], run.state[VISITS]
    loss[step.index] = 0.5 * loss[step.index] + 0.5 * step.terms[0].values.detach()
    visits[step.index] += 1
'''

SETTINGS = ["data.dataset=digits", "data.subset=96", "model.arch=small-cnn", "model.width=4", "eval.n=32",
            "eval.pgd_steps=1", "optim.schedule=constant", "optim.lr=0.05", "device=cpu", "seed=3"]


@pytest.fixture
def tally(tmp_path, monkeypatch):
    """The plugin installed into a fresh sys.path entry (this process and its children)."""
    site = tmp_path / "site"
    (site / "advcore_tally_test").mkdir(parents=True)
    (site / "advcore_tally_test" / "__init__.py").write_text(PLUGIN)
    info = site / "advcore_tally_test-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: advcore-tally-test\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[advcore.plugins]\ntally = advcore_tally_test\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    return site


def config(batch_size: int, epochs: int):
    return load_config(None, SETTINGS + [f"data.batch_size={batch_size}", f"epochs={epochs}", "plugins=[\"tally\"]"])


def torchrun(site: Path, out: Path, batch_size: int, epochs: int) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", ADVCORE_PROGRESS="0")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    sets = [a for s in SETTINGS + [f"data.batch_size={batch_size}", f"epochs={epochs}"] for a in ("--set", s)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "advcore", "train", "--plugin", "tally", "--out", str(out), *sets]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def weights_and_state(run_dir: Path) -> dict[str, torch.Tensor]:
    _, tensors = load_checkpoint(run_dir / "checkpoints" / "last")
    return {k: v for k, v in tensors.items() if k.startswith(("model.", "state."))}


def assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(want)
    assert {"state.tally.loss", "state.tally.visits"} <= set(got)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-5, msg=key)


def test_two_processes_match_one_and_resume_with_one(tally, tmp_path):
    torch.set_num_threads(1)
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    stdout = torchrun(tally, ddp, batch_size=16, epochs=2)  # 2 ranks x 16 = global batches of 32
    train(config(batch_size=32, epochs=2), single, log=lambda line: None)

    assert_same(weights_and_state(ddp), weights_and_state(single))
    visits = weights_and_state(ddp)["state.tally.visits"]
    assert visits.sum() == 2 * 96 and set(visits.unique().tolist()) <= {0, 2}  # every subset sample, each epoch
    assert stdout.count("epoch 2/2") == 1 and stdout.count("final:") == 1  # rank 0 reports and writes
    assert len((ddp / "metrics.jsonl").read_text().splitlines()) == 2

    # the global state resumes in one process (per-rank batch 32 = the same global batch)
    moved = tmp_path / "moved"
    shutil.copytree(ddp, moved)
    train(config(batch_size=32, epochs=3), moved, resume=True, log=lambda line: None)
    train(config(batch_size=32, epochs=3), single, resume=True, log=lambda line: None)
    assert_same(weights_and_state(moved), weights_and_state(single))


def test_mid_epoch_resume_needs_a_matching_global_batch(tally, tmp_path):
    """A position inside an epoch converts between world sizes only on a batch boundary."""
    from advcore.errors import CheckpointError
    from advcore.engine import build_run, restore_checkpoint, write_checkpoint

    run, _ = build_run(config(batch_size=32, epochs=2), tmp_path)
    run.global_step = 5
    write_checkpoint(run, "last", epoch=1, batch=2)  # 2 batches of 32 into epoch 2
    for batch_size, batch in ((16, 4), (64, 1)):
        other, loader = build_run(config(batch_size=batch_size, epochs=2), None)
        assert restore_checkpoint(other, tmp_path / "checkpoints" / "last")[:2] == (1, batch)
        assert other.global_step == round(5 * len(loader) / run.steps_per_epoch)
    other, _ = build_run(config(batch_size=48, epochs=2), None)
    with pytest.raises(CheckpointError, match="not a multiple of this run's global batch 48"):
        restore_checkpoint(other, tmp_path / "checkpoints" / "last")


@pytest.mark.parametrize("rows", [torch.rand(5, 3, 2), torch.arange(5), torch.rand(5) > 0.5, torch.rand(0, 3, 2),
                                  torch.randint(0, 9, (5, 4), dtype=torch.int32)])
def test_state_rows_travel_as_bytes_of_a_fixed_width(rows):
    """Any dtype (bool included) packs into [n, bytes per row] and back; an empty batch keeps the width."""
    from advcore.runtime.distributed import _as_bytes, _from_bytes

    packed = _as_bytes(rows)
    assert packed.dtype == torch.uint8
    assert packed.shape == (rows.shape[0], math.prod(rows.shape[1:]) * rows.element_size())
    assert torch.equal(_from_bytes(packed, rows), rows)
