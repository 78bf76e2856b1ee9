"""The advcore command line as a user runs it (subprocesses of the installed script)."""

import json
import os
import subprocess
import sys

import pytest

ENV = dict(os.environ, ADVCORE_PROGRESS="0")


def advcore(*args, check=False):
    proc = subprocess.run([sys.executable, "-m", "advcore", *args], capture_output=True, text=True, env=ENV,
                          timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_plugins_lists_baselines_and_the_third_party_example():
    rows = json.loads(advcore("plugins", "--json", check=True).stdout)
    by_name = {r["name"]: r for r in rows}
    for name in ("standard", "pgd-at", "trades", "mart", "alp", "pgd", "fgsm-rs", "free", "label-smoothing"):
        assert name in by_name, name
    assert by_name["label-smoothing"]["package"] == "advcore-label-smoothing"
    assert "advcore_adapt_targets" in by_name["label-smoothing"]["hooks"]
    assert by_name["trades"]["options"]["beta"]["default"] == 6.0
    for row in rows:
        assert set(row) >= {"name", "package", "hooks", "options"}


def test_unknown_plugin_prints_one_line_with_the_choices():
    proc = advcore("train", "--plugin", "nosuch")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown plugin 'nosuch'" in lines[0] and "trades" in lines[0]
    assert "Traceback" not in proc.stderr


def test_conflicting_adversaries_are_named():
    proc = advcore("plan", "--plugin", "fgsm-rs", "--plugin", "free")
    assert proc.returncode == 1
    assert "'fgsm-rs' and 'free' both claim the adversary role" in proc.stderr


def test_bad_set_value_is_one_line():
    proc = advcore("train", "--set", "attack.eps=3")
    assert proc.returncode == 1 and "attack.eps" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_plan_shows_roles_and_hook_order():
    plan = json.loads(advcore("plan", "--plugin", "trades", "--plugin", "label-smoothing", "--json", check=True).stdout)
    assert plan["roles"] == {"objective": "trades", "adversary": "pgd"}
    assert plan["defaults_added"] == ["pgd"]
    assert plan["hooks"]["advcore_adapt_targets"] == ["label-smoothing"]


def test_train_then_eval_and_the_third_party_plugin(tmp_path):
    out = tmp_path / "run"
    proc = advcore("train", "--plugin", "pgd-at", "--plugin", "label-smoothing", "--epochs", "2", "--subset", "300",
                   "--out", str(out), "--seed", "1", "--set", "attack.steps=3", "--set", "model.width=8")
    assert proc.returncode == 0, proc.stderr
    assert "final: clean_acc=" in proc.stdout
    result = json.loads(advcore("eval", str(out), "--json", "--attack", "pgd", "--n", "100",
                                "--pgd-steps", "5", check=True).stdout)
    assert set(result) >= {"clean_acc", "pgd5_acc"}
    assert 0 <= result["pgd5_acc"] <= result["clean_acc"] <= 1
    again = advcore("train", "--plugin", "pgd-at", "--plugin", "label-smoothing", "--epochs", "2", "--subset", "300",
                    "--out", str(out), "--seed", "1", "--set", "attack.steps=3", "--set", "model.width=8", "--resume")
    assert again.returncode == 0, again.stderr  # nothing left to do: resumes at the end


def test_missing_data_is_one_line(tmp_path):
    proc = advcore("train", "--dataset", "mnist", "--data-dir", str(tmp_path / "none"))
    assert proc.returncode == 1 and "mnist" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
