"""The learning-rate schedule: torch's schedulers on the run, against closed forms derived here,
the warm-up option, and its checkpointing (saved state, and old checkpoints without it)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from advcore.errors import ConfigError
from advcore.kernel.config import load_config
from advcore.runtime import checkpoint as ckpt
from advcore.testing import lr_at, seal_manifest, tiny_config, train, train_step
from advcore.engine import build_run
from advcore.engine.optim import lr_schedule

LR, EPOCHS, SPE = 0.1, 4, 5  # tiny_config's 64 samples / batch 16 -> 4 batches; lr_schedule takes any SPE


def closed_form(schedule: str, k: int, total: int, spe: int, *, milestones=(), gamma=0.1, pct=0.25,
                warm=0, start=1e-3) -> float:
    """The learning rate of batch ``k`` (0-based) of ``total``, written from the definitions."""
    if k < warm:  # linear ramp from start*lr, reaching lr at batch `warm`
        return LR * (start + (1 - start) * k / warm)
    if schedule == "constant":
        return LR
    if schedule == "step":  # milestones are epochs of the whole run
        return LR * gamma ** sum(k >= m * spe for m in milestones)
    if schedule == "cosine":  # from lr at the end of the warm-up to 0 after the last batch
        return LR * 0.5 * (1 + math.cos(math.pi * (k - warm) / (total - warm)))
    # PyTorch's one-cycle: cosine lr/25 -> lr over batches 0..pct*T-1, then lr -> lr/25e4 at batch T-1
    def anneal(a, b, p):
        return b + (a - b) / 2 * (1 + math.cos(math.pi * p))
    up = pct * total - 1
    if k <= up:
        return anneal(LR / 25, LR, k / up)
    return anneal(LR, LR / 25e4, (k - up) / (total - 1 - up))


CASES = {
    "constant": ([], {}),
    "cosine": ([], {}),
    "step": (["optim.milestones=[1, 3]", "optim.gamma=0.2"], {"milestones": (1, 3), "gamma": 0.2}),
    "onecycle": (["optim.pct_start=0.3"], {"pct": 0.3}),
    "cosine+warmup": (["optim.warmup_epochs=1.5"], {"warm": "1.5"}),
    "step+warmup": (["optim.milestones=[2]", "optim.warmup_epochs=1", "optim.warmup_start=0.1"],
                    {"milestones": (2,), "warm": "1", "start": 0.1}),
}


def _expected(name: str, spe: int) -> list[float]:
    schedule = name.split("+")[0]
    kw = dict(CASES[name][1])
    if "warm" in kw:
        kw["warm"] = round(float(kw["warm"]) * spe)
    total = EPOCHS * spe
    return [closed_form(schedule, k, total, spe, **kw) for k in range(total)]


def _config(name: str):
    return load_config(None, [f"optim.schedule={name.split('+')[0]}", f"optim.lr={LR}", *CASES[name][0]], epochs=EPOCHS)


@pytest.mark.parametrize("name", CASES)
def test_the_schedules_per_batch_equal_their_closed_forms(name):
    lrs = lr_schedule(_config(name), SPE)
    assert lrs == pytest.approx(_expected(name, SPE), rel=1e-9, abs=1e-12)
    assert lr_at(_config(name), 2.5, steps_per_epoch=SPE) == pytest.approx(_expected(name, SPE)[int(2.5 * SPE)])


@pytest.mark.parametrize("name", ["step+warmup", "onecycle"])
def test_a_training_run_steps_its_scheduler_once_per_batch(name):
    """The real run.scheduler: the rate each batch trained with, batch after batch."""
    cfg = _config(name)
    config = tiny_config(["standard"], epochs=EPOCHS, optim=cfg.optim.model_dump(),
                         data={"subset": 64, "batch_size": 16, "augment": False})
    run, loader = build_run(config, None)
    assert run.steps_per_epoch == 4 and isinstance(run.scheduler, torch.optim.lr_scheduler.LRScheduler)
    used = []
    for epoch in range(EPOCHS):
        for b, batch in enumerate(loader.epoch(epoch)):
            used.append(run.optimizer.param_groups[0]["lr"])
            train_step(run, batch, epoch, b)
    assert used == pytest.approx(_expected(name, 4), rel=1e-9, abs=1e-12)


def test_hats_sec_5_3_warm_up_is_expressible():
    """App. C.2 (Gowal et al.'s setup): cosine annealing, peak 0.4, a 10-epoch warm-up, 400 epochs."""
    cfg = load_config(None, ["optim.schedule=cosine", "optim.lr=0.4", "optim.warmup_epochs=10"], epochs=400)
    spe = 10
    assert lr_at(cfg, 0, spe) == pytest.approx(0.4e-3)  # ~0 at the first batch
    assert lr_at(cfg, 5, spe) == pytest.approx(0.4 * (1e-3 + (1 - 1e-3) * 0.5))
    assert lr_at(cfg, 10, spe) == pytest.approx(0.4)  # the peak when the warm-up ends
    assert lr_at(cfg, 205, spe) == pytest.approx(0.4 * 0.5 * (1 + math.cos(math.pi * 195 / 390)))


@pytest.mark.parametrize("sets, says", [
    (["optim.warmup_epochs=4"], "optim.warmup_epochs 4 must be shorter than the run's 4 epochs; lower it or raise epochs"),
    (["optim.schedule=onecycle", "optim.warmup_epochs=1"],
     "optim.warmup_epochs cannot be combined with optim.schedule=onecycle, which warms up by itself"),
    (["optim.schedule=step", "optim.milestones=[1, 3]", "optim.warmup_epochs=1"],
     "optim.milestones [1] fall inside the 1-epoch warm-up"),
    (["optim.warmup_epochs=-1"], "optim.warmup_epochs: Input should be greater than or equal to 0"),
])
def test_nonsense_warm_ups_are_one_line_config_errors(sets, says):
    with pytest.raises(ConfigError) as err:
        load_config(None, sets, epochs=4)
    assert says in str(err.value) and "\n" not in str(err.value)


def _final(out):
    manifest, tensors = ckpt.load_checkpoint(out / "checkpoints" / "last")
    return manifest, {k: v for k, v in tensors.items() if k.startswith(("model.", "optim.", "state."))}


def _resume_config():
    return tiny_config(["pgd-at"], epochs=3, deterministic=True, data={"subset": 64, "batch_size": 16},
                       optim={"schedule": "step", "milestones": [2], "warmup_epochs": 1.5})


@pytest.mark.parametrize("old_checkpoint", [False, True])
def test_resume_is_bit_exact_with_saved_or_rebuilt_scheduler_state(tmp_path, old_checkpoint):
    """A checkpoint keeps the scheduler's state_dict (JSON); one written before it did is
    resumed by rebuilding the schedule and stepping it to the checkpoint's batch."""
    config = _resume_config()
    train(config, tmp_path / "full", log=lambda _: None)
    train(config, tmp_path / "split", log=lambda _: None, stop_after=1)
    path = tmp_path / "split" / "checkpoints" / "last.json"
    manifest = json.loads(path.read_text())
    assert manifest["scheduler"]["last_epoch"] == 4  # one epoch of 4 batches, inside the 6-batch warm-up
    if old_checkpoint:
        del manifest["scheduler"]
        path.write_text(json.dumps(seal_manifest({k: v for k, v in manifest.items() if k != "manifest_sha256"})))
    train(config, tmp_path / "split", resume=True, log=lambda _: None)
    (m_full, full), (m_split, split) = _final(tmp_path / "full"), _final(tmp_path / "split")
    assert full.keys() == split.keys()
    for key in full:
        assert torch.equal(full[key], split[key]), key
    assert m_full["scheduler"] == m_split["scheduler"]
    assert m_full["optimizer"]["param_groups"][0]["lr"] == m_split["optimizer"]["param_groups"][0]["lr"]
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([_LR_WARM(3), 0.1 * 0.1 ** 0, 0.1 * 0.1])  # each epoch's last batch


def _LR_WARM(k: int, warm: int = 6, start: float = 1e-3) -> float:
    return 0.1 * (start + (1 - start) * k / warm)


def test_a_recipe_run_of_other_length_keeps_the_warm_ups_fraction():
    from advcore.cli.recipes import rescale_schedule

    data = {"epochs": 40, "optim": {"schedule": "cosine", "warmup_epochs": 10}}
    rescale_schedule(data, 400)
    assert data["optim"]["warmup_epochs"] == pytest.approx(1.0)
