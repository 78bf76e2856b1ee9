"""Paper recipes: every recipe parses, resolves and runs as its twin; the CLI lists, runs and compares.

The per-paper tests (tests/test_recipes_<paper>.py) tie recipe values to the paper text.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from advcore.cli.app import app
from advcore.kernel.config import load_config
from advcore.evaluation.eval_attacks import parse_attacks
from advcore.kernel.plugins import installed_plugins
from advcore.cli.recipes import all_recipes, find_recipe, recipes_markdown
from advcore.engine import resolve_composition, train

REPO = Path(__file__).resolve().parents[1]
RECIPES = all_recipes()
runner = CliRunner()
INSTALLED = set(installed_plugins())


def _needs_plugins(recipe):
    """A recipe whose plugins are not all installed (e.g. hat/cifar10-hat-fat before `fat` ships) is skipped."""
    missing = sorted(set(recipe.plugins) - INSTALLED)
    return pytest.param(recipe, marks=pytest.mark.skipif(bool(missing), reason=f"plugin(s) {missing} not installed"),
                        id=recipe.name)


RUNNABLE = [_needs_plugins(r) for r in RECIPES]


def user_runs(*args):
    """The command as a user runs it: stderr/stdout and the exit code of the installed CLI."""
    proc = subprocess.run([sys.executable, "-m", "advcore", *args], capture_output=True, text=True,
                          env=dict(os.environ, ADVCORE_PROGRESS="0", OMP_NUM_THREADS="1"))
    return proc.returncode, proc.stdout + proc.stderr


def test_recipes_are_shipped_for_every_seed_paper():
    papers = {r.name.split("/")[0] for r in RECIPES}
    assert {"hat", "he", "iaat", "raat", "hard-instances"} <= papers
    assert all(r.path.is_relative_to(REPO / "core" / "advcore" / "recipe_files") for r in RECIPES)


@pytest.mark.parametrize("recipe", RUNNABLE)
def test_recipe_config_validates_and_its_plugins_resolve(recipe):
    cfg = load_config(base=recipe.run_config())
    plugins, options = resolve_composition(cfg)
    assert set(recipe.plugins) <= {p.name for p in plugins}
    assert cfg.recipe.name == recipe.name and not cfg.recipe.twin
    assert cfg.data.dataset != "fashion-mnist", "a paper recipe names the paper's dataset"
    # a row the paper shows only as curves (paper 004, Fig. 1) reports nothing and says so in its notes
    assert recipe.reported or "curves" in recipe.notes
    assert all(0 <= v <= 100 for v in recipe.reported.values())
    measured = {a.key for a in parse_attacks(recipe.attacks)} | {"clean_acc"}
    assert set(recipe.reported) <= measured, "every reported number needs the eval attack that measures it"
    twin = load_config(base=recipe.run_config(twin=True))
    assert twin.plugins == cfg.plugins and twin.options.keys() == cfg.options.keys()
    assert twin.data.dataset == "fashion-mnist" and twin.model.arch == "small-cnn"


@pytest.mark.parametrize("recipe", RUNNABLE)
def test_recipe_twin_trains_one_short_epoch(recipe, tmp_path):
    cfg = load_config(None, ["data.subset=128", "eval.n=32", "eval.every=1", "eval.pgd_steps=2", "device=cpu"],
                      base=recipe.run_config(twin=True, epochs=1))
    history = train(cfg, tmp_path / "run", log=lambda line: None)
    assert len(history) == 1 and math.isfinite(history[0]["train_loss"])
    assert json.loads((tmp_path / "run" / "config.json").read_text())["recipe"] == {"name": recipe.name, "twin": True}


def test_issue_21_rows_are_listed():
    """RAAT#, the added rows and HAT + FAT are in `advcore recipes` (HAT + FAT even before `fat` is installed)."""
    listed = runner.invoke(app, ["recipes"])
    assert listed.exit_code == 0, listed.output
    for name in ("raat/cifar10-raat-sharp", "raat/cifar100-raat-sharp", "raat/cifar10-raat-wrn-28-10",
                 "raat/tiny-imagenet-raat", "raat/cifar10-raat-l2", "iaat/cifar100-iaat-resnet18",
                 "hat/tiny-imagenet-hat", "hat/imagenet-100-hat", "hat/cifar10-hat-fat"):
        assert name in listed.output, name


@pytest.mark.skipif("fat" not in INSTALLED, reason="the fat plugin is not installed yet")
def test_hat_fat_recipe_twin_trains(tmp_path):
    recipe = find_recipe("hat/cifar10-hat-fat")
    assert recipe.plugins == ["hat", "fat"] and recipe.reported == {"clean_acc": 85.7, "pgd20_acc": 50.4}
    cfg = load_config(None, ["data.subset=128", "eval.n=32", "eval.every=1", "eval.pgd_steps=2", "device=cpu"],
                      base=recipe.run_config(twin=True, epochs=1))
    history = train(cfg, tmp_path / "run", log=lambda line: None)
    assert len(history) == 1 and math.isfinite(history[0]["train_loss"])


def write_recipe(folder: Path, name: str, body: str) -> Path:
    path = folder / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    return path


TOY = """
plugins = ["pgd-at"]
epochs = 200
[recipe]
paper = "Toy paper"
row = "Table 1, toy row"
checkpoint = "last"
attacks = ["pgd-5"]
[recipe.reported]
clean_acc = 90.0
pgd5_acc = 40.0
[recipe.twin]
"attack.steps" = 2
[data]
dataset = "cifar10"
[optim]
schedule = "step"
milestones = [80, 140, 170]
[attack]
eps = "8/255"
step_size = "2/255"
steps = 10
"""


@pytest.fixture
def toy_recipes(tmp_path, monkeypatch):
    root = tmp_path / "recipes"
    write_recipe(root, "toy/cifar10-pgd-at", TOY)
    monkeypatch.setenv("ADVCORE_RECIPES", str(root))
    return root


def test_twin_scales_schedule_and_keeps_step_ratio(toy_recipes):
    twin = load_config(base=find_recipe("toy/cifar10-pgd-at").run_config(twin=True))
    # 3 twin epochs of a 200-epoch run: milestones 80, 140, 170 -> 1.2, 2.1, 2.55 -> epochs 1, 2 (3 is the end)
    assert twin.epochs == 3 and twin.optim.milestones == [1, 2]
    assert twin.attack.eps == 0.1 and twin.attack.step_size == pytest.approx(0.1 * (2 / 255) / (8 / 255))
    assert twin.attack.steps == 2  # the recipe's own twin override
    full = load_config(base=find_recipe("toy/cifar10-pgd-at").run_config())
    assert full.attack.eps == pytest.approx(8 / 255) and full.optim.milestones == [80, 140, 170]
    half = load_config(base=find_recipe("toy/cifar10-pgd-at").run_config(epochs=100))  # advcore train --epochs 100
    assert half.epochs == 100 and half.optim.milestones == [40, 70, 85]


def test_cli_lists_shows_and_rejects_recipes(toy_recipes):
    listed = runner.invoke(app, ["recipes"])
    assert listed.exit_code == 0 and "toy/cifar10-pgd-at" in listed.output and "pgd5 40.00" in listed.output
    shown = runner.invoke(app, ["recipes", "toy/cifar10-pgd-at"])
    assert "Table 1, toy row" in shown.output and "advcore eval runs/toy-cifar10-pgd-at/checkpoints/last.json" \
        " --attack pgd-5" in shown.output
    code, output = user_runs("recipes", "toy/cifar10")
    assert code == 1 and output.strip() == ("error: unknown recipe 'toy/cifar10' (did you mean: toy/cifar10-pgd-at); "
                                            "run 'advcore recipes' to list them")
    code, output = user_runs("train", "--twin")
    assert code == 1 and "--twin needs --recipe NAME" in output


@pytest.mark.parametrize("body, message", [
    ("plugins = []\n", "has no [recipe] table"),
    ('[recipe]\npaper = "p"\nrow = "r"\n[recipe.reported]\nrobust = 3.0\n', "robust must be a number keyed like"),
    ('[recipe]\npaper = "p"\nrow = "r"\ncheckpoint = "final"\n[recipe.reported]\nclean_acc = 3.0\n',
     "checkpoint = 'final' (allowed: best, last)"),
    ('[recipe]\npaper = "p"\n[recipe.reported]\nclean_acc = 3.0\n', "[recipe] lacks row"),
    ("[recipe\n", "could not be parsed"),
])
def test_broken_recipe_files_get_one_line_errors(toy_recipes, body, message):
    write_recipe(toy_recipes, "toy/broken", body)
    code, output = user_runs("recipes", "toy/broken")
    assert code == 1 and message in output and len(output.strip().splitlines()) == 1


def test_train_from_recipe_then_report_compares_with_the_paper(toy_recipes, tmp_path):
    out = tmp_path / "run"
    trained = runner.invoke(app, ["train", "--recipe", "toy/cifar10-pgd-at", "--twin", "--epochs", "1",
                                  "--subset", "64", "--set", "eval.n=32", "--device", "cpu", "--out", str(out)])
    assert trained.exit_code == 0, trained.output
    assert f"advcore eval {out}/checkpoints/last.json --attack pgd-5 --out {out}/eval" in trained.output
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["epochs"] == 1 and cfg["attack"]["steps"] == 2 and cfg["data"]["subset"] == 64  # flags override
    evaluated = runner.invoke(app, ["eval", str(out / "checkpoints" / "last.json"), "--attack", "pgd-5", "--n", "64",
                                    "--device", "cpu", "--out", str(out / "eval")])
    assert evaluated.exit_code == 0, evaluated.output
    ours = json.loads((out / "eval" / "eval.json").read_text())
    report = runner.invoke(app, ["report", str(out)])
    assert report.exit_code == 0, report.output
    assert "recipe toy/cifar10-pgd-at: Toy paper, Table 1, toy row (this run is the scaled-down" in report.output
    row = next(line for line in report.output.splitlines() if line.startswith("| pgd5 |"))
    paper, run, diff = (cell.strip() for cell in row.strip("|").split("|")[1:])
    assert float(paper) == 40.0 and float(run) == pytest.approx(100 * ours["pgd5_acc"], abs=0.006)
    assert float(diff) == pytest.approx(100 * ours["pgd5_acc"] - 40.0, abs=0.011)


def test_docs_list_every_recipe():
    page = (REPO / "docs" / "recipes.md").read_text()
    assert recipes_markdown(RECIPES) in page, "regenerate the table with 'advcore recipes --markdown'"
