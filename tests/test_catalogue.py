"""Every catalogued bad input (tests/catalogue.py, docs/errors.md) through the installed
``advcore``: the documented exit code, one line naming the problem, never a traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from catalogue import CASES, Case
from cli_exe import ENV, EXE, advcore, one_line

DOCS = Path(__file__).parents[1] / "docs" / "errors.md"
TINY_RUN = ["train", "--plugin", "standard", "--epochs", "2", "--subset", "32", "--set", "model.width=8",
            "--set", "eval.n=8", "--set", "eval.pgd_steps=1", "--set", "data.batch_size=16"]


def _manifest(run: Path, tag: str = "last") -> tuple[Path, dict]:
    path = run / "checkpoints" / f"{tag}.json"
    return path, json.loads(path.read_text())


def _tensor_file(run: Path, tag: str = "last") -> Path:
    path, m = _manifest(run, tag)
    return path.with_name(m["tensors_file"])


def _edit(run: Path, change) -> None:
    path, m = _manifest(run)
    change(m)
    path.write_text(json.dumps(m))


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))


def _npz(tmp: Path, name: str, images) -> None:
    np.savez(tmp / name, images=images, labels=np.zeros(len(images), dtype=np.int64))


SETUP = {
    "bad_toml": lambda tmp, run: (tmp / "bad.toml").write_text("epochs 3\n"),
    "json_config": lambda tmp, run: (tmp / "run.json").write_text("{}"),
    "list_yaml": lambda tmp, run: (tmp / "list.yaml").write_text("- 1\n- 2\n"),
    "eps_toml": lambda tmp, run: (tmp / "eps.toml").write_text("[attack]\neps = -0.5\n"),
    "empty_dir": lambda tmp, run: (tmp / "empty").mkdir(),
    "truncate_tensors": lambda tmp, run: _tensor_file(run).write_bytes(_tensor_file(run).read_bytes()[:100]),
    "flip_byte": lambda tmp, run: _flip(_tensor_file(run)),
    "drop_tensors": lambda tmp, run: _tensor_file(run).unlink(),
    "manifest_not_json": lambda tmp, run: _manifest(run)[0].write_text("{not json"),
    "manifest_list": lambda tmp, run: _manifest(run)[0].write_text("[1, 2]"),
    "edit_epoch": lambda tmp, run: _edit(run, lambda m: m.update(epoch=1)),
    "drop_global_step": lambda tmp, run: _edit(run, lambda m: m.pop("global_step")),
    "swap_tensors": lambda tmp, run: shutil.copy(_tensor_file(run, "previous"), _tensor_file(run)),  # epoch 1's
    "drop_last": lambda tmp, run: _manifest(run)[0].unlink(),
    "break_all": lambda tmp, run: [_manifest(run, t)[0].write_text("{}") for t in ("last", "previous", "best")],
    "drop_config": lambda tmp, run: (run / "config.json").unlink(),
    "garble_config": lambda tmp, run: (run / "config.json").write_text('{"epochs": "many"}'),
    "live_lock": lambda tmp, run: (run / ".advcore.lock").write_text("1"),  # pid 1 is always alive
    "nan_extra": lambda tmp, run: _npz(tmp, "nan.npz", np.full((4, 8, 8, 1), np.nan, dtype=np.float32)),
    "inf_extra": lambda tmp, run: _npz(tmp, "inf.npz", np.full((4, 8, 8, 1), np.inf, dtype=np.float32)),
    "shape_extra": lambda tmp, run: _npz(tmp, "shape.npz", np.zeros((4, 3, 5), dtype=np.uint8)),
    "ok_extra": lambda tmp, run: _npz(tmp, "ok.npz", np.zeros((4, 8, 8, 1), dtype=np.uint8)),
}


def materialise(case: Case, tmp: Path, run_source: Path | None = None) -> tuple[list[str], dict]:
    """The case's command line with its files made under ``tmp``."""
    tmp.mkdir(parents=True, exist_ok=True)
    run = tmp / "run"
    if case.needs_run:
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(run_source, run)
    (tmp / "file").write_text("not a run directory\n")
    if case.setup:
        SETUP[case.setup](tmp, run)
    args = [a.replace("{tmp}", str(tmp)).replace("{run}", str(run)).replace("{file}", str(tmp / "file"))
            for a in case.args]
    return args, ENV


def _in_order(says: str, line: str) -> bool:
    at = 0
    for part in says.split(" ... "):
        at = line.find(part, at)
        if at < 0:
            return False
        at += len(part)
    return True


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("catalogue") / "run"
    proc = advcore(*TINY_RUN, "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out


def test_the_catalogue_has_150_entries_and_each_is_in_the_docs():
    assert len(CASES) >= 150
    assert len({(c.args, c.setup) for c in CASES}) == len(CASES)  # no case counted twice
    text = DOCS.read_text()
    missing = [c.id for c in CASES if f"`advcore {' '.join(c.args)}`".replace("{tmp}", "DIR").replace("|", "\\|")
               not in text.replace("{tmp}", "DIR")]
    assert not missing, missing[:5]


@pytest.mark.parametrize("case", CASES, ids=[f"{i}:{c.id}" for i, c in enumerate(CASES)])
def test_bad_input_ends_in_one_line_with_the_documented_code(case, tmp_path, request):
    run_source = request.getfixturevalue("small_run") if case.needs_run else None
    args, env = materialise(case, tmp_path, run_source)
    proc = subprocess.run([EXE, *args], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == case.code, proc.stderr
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text
    if case.code == 1:
        line = one_line(proc)
        assert line.startswith("error: ") and _in_order(case.says, line), line
    else:  # click's usage message: short, on stderr (a bare group prints its help)
        flat = " ".join(text.replace("│", " ").split())
        assert case.says in flat, text
        assert len(text.strip().splitlines()) < 45
