"""The exit-code table of docs/errors.md, row by row, through the installed ``advcore`` script."""

import re
import signal
import subprocess
import sys
import time

import pytest

from cli_exe import ENV, EXE, advcore, one_line

from advcore.testing import load_checkpoint


def test_version_prints_the_installed_version():
    from importlib.metadata import version

    proc = advcore("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"advcore {version('advcore')}"


def test_help_exits_0():
    proc = advcore("--help")
    assert proc.returncode == 0 and "train" in proc.stdout and "Traceback" not in proc.stderr


def test_a_user_error_exits_1_with_one_line():
    proc = advcore("train", "--set", "attack.eps=3")
    assert proc.returncode == 1
    assert one_line(proc).startswith("error: invalid configuration: attack.eps:")


@pytest.mark.parametrize("args, says", [
    (["--bogus"], "No such option: --bogus"),
    (["eval"], "Missing argument 'checkpoint'"),
    (["nosuch"], "No such command 'nosuch'"),
    (["train", "--epochs", "x"], "Invalid value for '--epochs'"),
    (["train", "--plugin"], "Option '--plugin' requires an argument"),
    (["eval", "run", "--n", "many"], "Invalid value for '--n'"),
    (["plot"], "Usage: advcore plot"),
    ([], "Usage: advcore"),
])
def test_usage_errors_exit_2_with_clicks_short_message(args, says):
    proc = advcore(*args)
    assert proc.returncode == 2, proc.stderr
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text and says in re.sub(r"[\s│╭╰─╮╯]+", " ", text), text
    assert len(text.strip().splitlines()) < 40


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["--bogus"], ["train", "--epochs", "x"],
                                  ["train", "--set", "attack.eps=3"], ["recipes"], ["plugins"]])
def test_these_answer_without_importing_torch(args):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "advcore", *args], capture_output=True,
                          text=True, env=ENV, timeout=120)
    modules = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert modules and "torch" not in modules, sorted(m for m in modules if "torch" in m)[:5]


def test_ctrl_c_exits_130_after_writing_a_checkpoint_and_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([EXE, "train", "--plugin", "standard", "--epochs", "50", "--subset", "64",
                             "--set", "model.width=8", "--set", "eval.n=16", "--set", "data.batch_size=16",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and f"advcore train --out {out} --resume" in err
    assert "stopped by SIGINT" in err
    manifest, _ = load_checkpoint(out)
    assert manifest["epoch"] >= 1


def test_a_package_adds_a_command_through_the_advcore_commands_entry_point():
    import os
    from pathlib import Path

    fixtures = Path(__file__).parent / "fixtures"
    env = {"PYTHONPATH": f"{fixtures}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    assert "hello" in advcore("--help", env=env).stdout
    proc = advcore("hello", "world", env=env)
    assert proc.returncode == 0 and proc.stdout == "hello world\n"
    assert advcore("hello", env=env).returncode == 2  # its usage errors are click's too
    assert advcore("hello", "world").returncode == 2  # not installed: no such command


def test_a_flagged_evaluation_exits_3(tmp_path):
    """A network whose weights are all zero predicts one class whatever the input: no attack,
    however strong, lowers its accuracy, so the eps-to-zero check must flag it."""
    import torch
    from safetensors.torch import save_file

    from advcore.models.architectures import build_model

    model = build_model("small-cnn", num_classes=10, in_channels=1, image_size=8, width=8)
    save_file({k: (torch.zeros_like(v) if v.is_floating_point() else v).contiguous()
               for k, v in model.state_dict().items()}, str(tmp_path / "constant.safetensors"))
    proc = advcore("eval", tmp_path / "constant.safetensors", "--arch", "small-cnn", "--dataset", "digits",
                   "--width", "8", "--checks", "-a", "pgd-5", "--n", "32", "--square-queries", "20", "--device", "cpu")
    assert proc.returncode == 3, proc.stderr
    assert "FLAGGED: possible gradient masking, failed checks: eps_to_zero" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_plugins_lists_from_metadata_and_details_on_request():
    listing = advcore("plugins")
    assert listing.returncode == 0
    assert "trades  (advcore-trades " in listing.stdout and "hooks:" not in listing.stdout
    one = advcore("plugins", "trades")
    assert one.returncode == 0 and "hooks: attack_objective, loss_terms" in one.stdout
    assert "--set options.trades.beta=6.0" in one.stdout and "mart" not in one.stdout
    unknown = advcore("plugins", "nosuch")
    assert unknown.returncode == 1 and one_line(unknown).startswith("error: unknown plugin 'nosuch'; installed plugins:")
