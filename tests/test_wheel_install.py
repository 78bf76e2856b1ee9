"""The wheels work without a checkout: recipes, plugin discovery and a twin run from a fresh venv.

Builds wheels of the core and of every built-in plugin, installs them (--no-deps) into a new
virtual environment that sees the system site-packages (so torch is not reinstalled), and runs
the installed ``advcore`` executable from a temporary directory with no repository on the path.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUILT_IN = sorted(p.parent for p in (REPO / "plugins").glob("*/pyproject.toml"))


def _run(cmd, cwd, env, timeout=600):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the venv's advcore executable, its environment, a scratch directory outside the checkout)."""
    root = tmp_path_factory.mktemp("wheels")
    base = Path(getattr(sys, "_base_executable", sys.executable))
    venv = root / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "ADVCORE_RECIPES")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INDEX="1", ADVCORE_PROGRESS="0", OMP_NUM_THREADS="1")
    _run([base, "-m", "venv", "--system-site-packages", "--without-pip", venv], root, env)
    python = venv / "bin" / "python"
    probe = subprocess.run([python, "-c", "import pip, torch"], capture_output=True, text=True, env=env)
    if probe.returncode:
        pytest.skip(f"the base interpreter {base} lacks pip or torch: {probe.stderr.strip().splitlines()[-1]}")
    wheels = root / "dist"
    _run([python, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", wheels, REPO, *BUILT_IN],
         root, env)
    built = sorted(wheels.glob("*.whl"))
    assert len(built) == 1 + len(BUILT_IN), [w.name for w in built]
    _run([python, "-m", "pip", "install", "-q", "--no-deps", *built], root, env)
    work = root / "work"
    work.mkdir()
    return venv / "bin" / "advcore", env, work


def test_installed_package_has_no_checkout_on_its_path(installed):
    advcore, env, work = installed
    where = _run([advcore.parent / "python", "-c", "import advcore, importlib.resources as r; "
                  "print(advcore.__file__); print(r.files('advcore') / 'recipe_files')"], work, env).split()
    assert all(Path(p).is_relative_to(advcore.parents[1]) for p in where), where
    assert not any(Path(p).is_relative_to(REPO) for p in where), where


def test_installed_wheels_list_recipes_and_plugins(installed):
    advcore, env, work = installed
    listed = _run([advcore, "recipes"], work, env)
    shipped = {p.relative_to(REPO / "core" / "advcore" / "recipe_files").with_suffix("").as_posix()
               for p in (REPO / "core" / "advcore" / "recipe_files").rglob("*.toml")}
    assert shipped and all(name in listed for name in shipped), listed
    plugins = _run([advcore, "plugins"], work, env)
    assert all(f"advcore-{p.name}" in plugins for p in BUILT_IN), plugins


def test_installed_wheels_train_a_recipe_twin(installed):
    advcore, env, work = installed
    out = work / "run"
    _run([advcore, "train", "--recipe", "hat/cifar10-trades", "--twin", "--epochs", "1", "--out", out,
          "--set", "data.subset=64", "--set", "eval.n=16", "--set", "eval.every=1", "--set", "eval.pgd_steps=1",
          "--set", "attack.steps=1", "--set", "device=cpu"], work, env)
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"] == {"name": "hat/cifar10-trades", "twin": True}
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1] and 0 <= rows[0]["clean_acc"] <= 1
