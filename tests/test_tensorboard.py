"""``--tensorboard`` writes every epoch's numeric metrics as scalars, or fails in one line without the package."""

import json
import sys

import pytest

from advcore.errors import ConfigError
from advcore.testing import tiny_config
from advcore.engine import train

pytest.importorskip("tensorboard", reason="the tensorboard package is in requirements-dev.txt")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def config(epochs=2):
    return tiny_config(["pgd-at"], epochs=epochs, data={"subset": 64, "batch_size": 32},
                       model={"width": 4}, attack={"steps": 1}, eval={"n": 16, "pgd_steps": 1})


def scalars(run_dir):
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_epoch_metrics_are_written_as_scalars(tmp_path):
    history = train(config(), tmp_path / "run", tensorboard=True, log=lambda line: None)
    written = scalars(tmp_path / "run")
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines == history
    for key in ("train_loss", "clean_acc", "robust_acc", "lr"):
        assert [step for step, _ in written[key]] == [1, 2]
        assert [value for _, value in written[key]] == pytest.approx([m[key] for m in lines], rel=1e-6)


def test_a_resumed_run_has_each_epoch_once(tmp_path):
    out = tmp_path / "run"
    train(config(3), out, tensorboard=True, stop_after=1, log=lambda line: None)
    train(config(3), out, tensorboard=True, resume=True, log=lambda line: None)
    assert [step for step, _ in scalars(out)["train_loss"]] == [1, 2, 3]


def test_missing_package_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now raises ImportError
    with pytest.raises(ConfigError, match=r"^--tensorboard needs the tensorboard package: pip install tensorboard"):
        train(config(), tmp_path / "run", tensorboard=True, log=lambda line: None)
    assert not (tmp_path / "run").exists()  # failed before doing any work


def test_cli_reports_the_missing_package_without_traceback(tmp_path, monkeypatch, capsys):
    from advcore.cli import app as cli

    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setattr(sys, "argv", ["advcore", "train", "--plugin", "pgd-at", "--out", str(tmp_path / "run"),
                                      "--tensorboard"])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 1  # a user error (docs/errors.md#exit-codes)
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("error: --tensorboard needs the tensorboard package: pip install tensorboard "
                       "(or train without --tensorboard)")


def test_tensorboard_needs_a_run_directory():
    with pytest.raises(ConfigError, match="--tensorboard writes into the run directory; add --out DIR"):
        train(config(), None, tensorboard=True, log=lambda line: None)
