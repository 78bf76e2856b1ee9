"""Errors name whoever's code raised them, and compositions that cannot run fail before any work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import advcore.kernel.core_plugin
from advcore.errors import PluginError
from advcore.kernel.plugins import resolve
from advcore.testing import tiny_batch, tiny_run
from advcore.engine import train_step

ADVCORE = Path(sys.executable).with_name("advcore")


def test_an_error_in_the_core_update_is_not_blamed_on_the_wrapper_around_it(monkeypatch):
    run = tiny_run(["pgd-at", "awp"], attack={"steps": 1})

    def broken(*args, **kwargs):
        raise RuntimeError("reduction broke")

    monkeypatch.setattr(advcore.kernel.core_plugin, "reduce_terms", broken)
    with pytest.raises(RuntimeError, match="reduction broke") as caught:
        train_step(run, tiny_batch(run, 4), 0, 0)
    assert not isinstance(caught.value, PluginError)
    assert "awp" not in str(caught.value)


def test_an_error_inside_a_plugin_names_that_plugin_and_its_package():
    run = tiny_run(["pgd-at", "awp"], attack={"steps": 1})
    run.options["awp"] = run.options["awp"].model_copy(update={"gamma": "not a number"})  # breaks awp's own code
    with pytest.raises(PluginError) as caught:
        train_step(run, tiny_batch(run, 4), 0, 0)
    message = str(caught.value)
    assert message.startswith("plugin 'awp' (package advcore-awp ")
    assert "failed in advcore_update: TypeError" in message


def test_an_error_in_another_plugins_hook_called_from_inside_awp_names_that_plugin(monkeypatch):
    """AWP's proxy pass calls every plugin's loss terms: a failure there is the objective's."""
    import advcore_trades

    run = tiny_run(["trades", "awp"], attack={"steps": 1})
    monkeypatch.setattr(advcore_trades, "kl_from_logits", None)  # trades' own call now fails
    with pytest.raises(PluginError, match=r"^plugin 'trades' \(package advcore-trades .*failed in advcore_loss_terms"):
        train_step(run, tiny_batch(run, 4), 0, 0)


def test_a_missing_objective_names_the_role_and_the_plugins_that_fill_it(monkeypatch):
    monkeypatch.setenv("ADVCORE_BLOCK_PLUGINS", "pgd-at")
    with pytest.raises(PluginError) as caught:
        resolve([])
    message = str(caught.value)
    assert message.startswith("no plugin fills the objective role; add one of: ")
    for objective in ("--plugin trades", "--plugin mart", "--plugin hat"):
        assert objective in message
    assert "\n" not in message


def test_a_missing_adversary_fails_at_plan_time_in_one_line():
    env = {**os.environ, "ADVCORE_BLOCK_PLUGINS": "pgd"}
    done = subprocess.run([str(ADVCORE), "plan", "--plugin", "trades"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no plugin fills the adversary role; add one of: " in lines[0]
    assert "--plugin fgsm-rs" in lines[0] and "--plugin free" in lines[0]


def test_two_answers_to_a_first_result_hook_are_a_named_conflict():
    from advcore import hookimpl
    from advcore.kernel.plugins import Installed, build_manager

    class SecondHead:
        @hookimpl
        def advcore_adjust_logits(self, logits):
            return logits * 2

    with pytest.raises(PluginError, match="plugins '.*' and '.*' both answer advcore_adjust_logits"):
        build_manager(resolve(["he"]) + [Installed("second-head", "tests", "0", module=SecondHead())])


def _with(plugin_object, name="sloppy"):
    from advcore.kernel.plugins import Installed

    return resolve(["pgd-at"]) + [Installed(name, "tests", "0", module=plugin_object)]


@pytest.mark.parametrize("hook_source, message", [
    ("run.stash['cache'] = 1", r"run.stash\['cache'\] is not an enabled plugin's name"),
    ("run.state.tensor('radius')", r"per-sample state 'radius' is not named '<plugin>.<what>'"),
])
def test_the_naming_rule_is_checked_at_run_start(hook_source, message):
    from advcore import hookimpl
    from advcore.testing import tiny_config
    from advcore.engine import build_run

    class Sloppy:
        @hookimpl
        def advcore_on_run_start(self, run):
            exec(hook_source, {"run": run})

    run, _ = build_run(tiny_config(["pgd-at"]), None, plugins=_with(Sloppy()))
    with pytest.raises(PluginError, match=message):
        run.hooks.on_run_start(run)


def test_step_records_follow_the_naming_rule():
    from advcore import hookimpl
    from advcore.testing import tiny_config
    from advcore.engine import build_run

    class Sloppy:
        @hookimpl
        def advcore_after_step(self, step):
            step.record("sloppy/ratio", 0.5)

    run, _ = build_run(tiny_config(["pgd-at"], attack={"steps": 1}), None, plugins=_with(Sloppy()))
    with pytest.raises(PluginError, match=r"step.record\('sloppy/ratio'\): metric names are '<plugin>.<what>'"):
        train_step(run, tiny_batch(run, 4), 0, 0)


def test_tensor_records_are_summed_without_a_sync_and_averaged_like_numbers():
    """step.record takes a one-element tensor (no .item() per step); the epoch metric is the mean
    over steps, the same as for plain numbers, and a mid-epoch checkpoint's totals are plain floats."""
    import json

    import torch

    from advcore import hookimpl
    from advcore.engine.metrics import EpochTotals
    from advcore.testing import tiny_config
    from advcore.engine import build_run

    class Counting:
        @hookimpl
        def advcore_after_step(self, step):
            step.record("sloppy.zeros", (step.y == 0).float().mean())  # a tensor
            step.record("sloppy.size", step.size, "sum")  # a number
            step.record("sloppy.count", (step.y == 0).sum(), "sum")  # an integer tensor

    run, _ = build_run(tiny_config(["pgd-at"], attack={"steps": 1}), None, plugins=_with(Counting()))
    totals, resumed = EpochTotals(), None
    fractions, zeros = [], 0
    for i in range(4):
        batch = tiny_batch(run, 8, start=8 * i)
        step = train_step(run, batch, 0, i)
        assert isinstance(step.records["sloppy.zeros"][0], torch.Tensor)
        fractions.append((batch.y == 0).float().mean().item())
        zeros += int((batch.y == 0).sum())
        totals.add(step)
        if i == 1:  # as a checkpoint after batch 2 writes it, and a resumed epoch reads it back
            resumed = EpochTotals(**json.loads(json.dumps(totals.state())))
        elif i > 1:
            resumed.add(step)
    for got in (totals.metrics(), resumed.metrics()):
        assert got["sloppy.zeros"] == pytest.approx(sum(fractions) / 4, abs=1e-7)
        assert got["sloppy.size"] == 32 and got["sloppy.count"] == zeros


def test_a_record_of_several_numbers_is_refused_by_name():
    from advcore import hookimpl
    from advcore.testing import tiny_config
    from advcore.engine import build_run

    class Sloppy:
        @hookimpl
        def advcore_after_step(self, step):
            step.record("sloppy.losses", step.y.float())

    run, _ = build_run(tiny_config(["pgd-at"], attack={"steps": 1}), None, plugins=_with(Sloppy()))
    with pytest.raises(PluginError, match=r"step.record\('sloppy.losses'\): a metric is one number, got a tensor "
                                          r"of shape \(4,\); reduce it first"):
        train_step(run, tiny_batch(run, 4), 0, 0)
