"""Paper recipes: one table row of a paper as a run config, with the paper's numbers.

A recipe is a TOML file ``<paper>/<row>.toml`` in a recipe directory. It holds an ordinary
run config (plugins, data, model, optim, attack, options) plus a ``[recipe]`` table:

    [recipe]
    paper = "HAT (Rade & Moosavi-Dezfooli, ICLR 2022)"
    row = "Table 2, CIFAR-10, ResNet-18: HAT"
    checkpoint = "best"              # the checkpoint the paper reports: best (early stopping) or last
    attacks = ["autoattack"]         # the `advcore eval` attacks behind the reported numbers
    eval_flags = "--step-size 0.003" # optional: further `advcore eval` flags of the paper's evaluation
    notes = "..."                    # optional: what the recipe cannot express, deviations
    [recipe.reported]                # the paper's numbers in percent, keyed like eval results
    clean_acc = 84.90
    autoattack_acc = 49.08
    [recipe.twin]                    # the Fashion-MNIST twin's overrides beyond TWIN_BASE
    "options.hat.std_epochs" = 1
    [recipe.reproduced]              # optional: what a run here measured, and on what hardware

The twin keeps the method and its options but swaps in Fashion-MNIST, a small CNN and a
short schedule, so CI can keep every recipe executable. Recipe directories are the
``ADVCORE_RECIPES`` paths (``os.pathsep``-separated, a user's own) and the recipes shipped
inside the package (``advcore/recipe_files``, package data read with importlib.resources), so
an installed wheel has them as well as an editable checkout.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["Recipe", "TWIN_BASE", "all_recipes", "compare", "comparison_table", "find_recipe", "recipe_dirs",
           "recipes_markdown"]

# The scaled-down twin: same plugins and options, data/model/schedule small enough for CI.
TWIN_BASE: dict[str, Any] = {
    "epochs": 3,
    "data.dataset": "fashion-mnist",
    "data.data_dir": None,
    "data.subset": 1024,
    "data.batch_size": 64,
    "data.extra": None,
    "data.extra_fraction": None,  # the twin has no extra data, so no share of it either
    "model.arch": "small-cnn",
    "model.width": 8,
    "model.normalize": False,
    "init_from": None,
    "attack.eps": 0.1,
    "eval.n": 256,
    "eval.every": 3,
    "eval.pgd_steps": 10,
}
TWIN_EPS = 0.1
_CHECKPOINTS = ("best", "last")


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    paper: str
    row: str
    reported: dict[str, float]
    config: dict[str, Any]
    checkpoint: str = "last"
    attacks: tuple[str, ...] = ("autoattack",)
    eval_flags: str = ""
    notes: str = ""
    twin: dict[str, Any] = field(default_factory=dict)
    reproduced: dict[str, Any] | None = None

    @property
    def plugins(self) -> list[str]:
        return list(self.config.get("plugins", []))

    def numbers(self, sep: str = ", ", short: bool = True) -> str:
        """The paper's numbers as text; a row the paper shows only as curves says so."""
        if not self.reported:
            return "none (the paper shows curves only)"
        return sep.join(f"{k.removesuffix('_acc') if short else k} {v:.2f}" for k, v in self.reported.items())

    def run_config(self, twin: bool = False, epochs: int | None = None) -> dict[str, Any]:
        """The config data of the paper-scale run or of its twin, tagged with the recipe's name.

        ``epochs`` shortens or lengthens the run; step-schedule milestones keep their fractions.
        """
        data = json.loads(json.dumps(self.config))
        if twin:
            data = _twin(data, self.twin)
        if epochs is not None:
            before, data["epochs"] = data.get("epochs", 5), epochs
            rescale_schedule(data, before)
        if self.checkpoint == "best":  # early stopping: every epoch on the paper's whole evaluation set
            data.setdefault("eval", {}).setdefault("epoch_n", None)
        data["recipe"] = {"name": self.name, "twin": twin}
        return data

    def eval_command(self, run: str) -> str:
        attacks = " ".join(f"--attack {a}" for a in self.attacks)
        flags = f" {self.eval_flags}" if self.eval_flags else ""
        return f"advcore eval {run}/checkpoints/{self.checkpoint}.json {attacks}{flags} --out {run}/eval"


RECIPE_PACKAGE, RECIPE_FOLDER = "advcore", "recipe_files"  # package data: advcore/recipe_files/<paper>/<row>.toml


def shipped_recipe_dir() -> Path | None:
    """The folder of the recipes installed with the package (a wheel's or an editable checkout's)."""
    folder = resources.files(RECIPE_PACKAGE) / RECIPE_FOLDER
    path = Path(str(folder))
    return path if folder.is_dir() and path.is_dir() else None


def recipe_dirs() -> list[Path]:
    """Where recipes are looked up: ``ADVCORE_RECIPES`` first, then the recipes shipped in the package."""
    dirs = [Path(p) for p in os.environ.get("ADVCORE_RECIPES", "").split(os.pathsep) if p]
    shipped = shipped_recipe_dir()
    if shipped is not None:
        dirs.append(shipped)
    return dirs


def all_recipes() -> list[Recipe]:
    """Every recipe in the recipe directories, by name; an earlier directory wins a name clash."""
    found: dict[str, Recipe] = {}
    for root in recipe_dirs():
        for path in sorted(root.rglob("*.toml")):
            name = path.relative_to(root).with_suffix("").as_posix()
            found.setdefault(name, read_recipe(path, name))
    return [found[k] for k in sorted(found)]


def find_recipe(name: str) -> Recipe:
    """A recipe by name (``hat/cifar10-hat``) or by the path of its TOML file."""
    path = Path(name)
    if path.suffix == ".toml":
        if not path.is_file():
            raise ConfigError(f"recipe file {path} does not exist; run 'advcore recipes' to list the recipes")
        return read_recipe(path, path.with_suffix("").name)
    for root in recipe_dirs():
        candidate = root / f"{name}.toml"
        if candidate.is_file():
            return read_recipe(candidate, name)
    names = [r.name for r in all_recipes()]
    close = [n for n in names if name in n] or names
    hint = f" (did you mean: {', '.join(close[:6])})" if close else " (no recipe directories found; set ADVCORE_RECIPES)"
    raise ConfigError(f"unknown recipe '{name}'{hint}; run 'advcore recipes' to list them")


def read_recipe(path: Path, name: str) -> Recipe:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"recipe file {path} could not be parsed: {str(exc).splitlines()[0]}") from None
    meta = data.pop("recipe", None)
    if not isinstance(meta, dict):
        raise ConfigError(f"recipe file {path} has no [recipe] table; add paper, row and [recipe.reported]")
    missing = [k for k in ("paper", "row", "reported") if k not in meta]
    if missing:
        raise ConfigError(f"recipe file {path}: [recipe] lacks {', '.join(missing)}; every recipe names its paper row")
    reported = meta["reported"]
    bad = [k for k, v in reported.items() if not k.endswith("_acc") or not isinstance(v, (int, float))]
    if bad:
        raise ConfigError(f"recipe file {path}: [recipe.reported] {bad[0]} must be a number keyed like an eval "
                          f"result (clean_acc, autoattack_acc, pgd20_acc, ...)")
    checkpoint = meta.get("checkpoint", "last")
    if checkpoint not in _CHECKPOINTS:
        raise ConfigError(f"recipe file {path}: checkpoint = {checkpoint!r} (allowed: {', '.join(_CHECKPOINTS)})")
    unknown = sorted(set(meta) - {"paper", "row", "reported", "checkpoint", "attacks", "eval_flags", "notes", "twin",
                            "reproduced"})
    if unknown:
        raise ConfigError(f"recipe file {path}: unknown key recipe.{unknown[0]}")
    return Recipe(name=name, path=path, paper=meta["paper"], row=meta["row"],
                  reported={k: float(v) for k, v in reported.items()}, config=data, checkpoint=checkpoint,
                  attacks=tuple(meta.get("attacks", ["autoattack"])), eval_flags=meta.get("eval_flags", "").strip(), notes=meta.get("notes", "").strip(),
                  twin=dict(meta.get("twin", {})), reproduced=meta.get("reproduced"))


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value


def _twin(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Scale a paper config down: TWIN_BASE, milestones and step size scaled, then the recipe's overrides."""
    epochs = data.get("epochs", 5)
    attack = data.get("attack", {})
    eps, step = attack.get("eps"), attack.get("step_size")
    for key, value in TWIN_BASE.items():
        _set(data, key, value)
    if eps is not None and step is not None:  # keep the paper's step/eps ratio
        from ..kernel.config import parse_fraction  # pydantic: only when a twin is built

        _set(data, "attack.step_size", TWIN_EPS * float(parse_fraction(step)) / float(parse_fraction(eps)))
    rescale_schedule(data, epochs)
    for key, value in overrides.items():
        _set(data, key, value)
    return data


def rescale_schedule(data: dict[str, Any], from_epochs: int) -> None:
    """Move step-schedule milestones and the warm-up to the same fractions of ``data["epochs"]`` (a shorter
    or longer run)."""
    epochs = data.get("epochs", 5)
    milestones = data.get("optim", {}).get("milestones")
    if milestones and epochs != from_epochs:
        scaled = sorted({max(1, round(m * epochs / from_epochs)) for m in milestones})
        _set(data, "optim.milestones", [m for m in scaled if m < epochs] or None)
    warmup = data.get("optim", {}).get("warmup_epochs")
    if warmup and epochs != from_epochs:  # the warm-up keeps its fraction of the run too
        _set(data, "optim.warmup_epochs", warmup * epochs / from_epochs)


def compare(recipe: Recipe, result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per reported number: the paper's value, this run's (None when not evaluated), the difference."""
    rows = []
    for key, paper in recipe.reported.items():
        ours = result.get(key)
        ours = round(100 * ours, 2) if isinstance(ours, (int, float)) else None
        rows.append({"metric": key, "paper": paper, "run": ours,
                     "difference": None if ours is None else round(ours - paper, 2)})
    return rows


def comparison_table(recipe: Recipe, result: dict[str, Any], twin: bool = False) -> str:
    """Markdown: the run's numbers beside the paper's for the recipe's row."""
    rows = compare(recipe, result)
    if not rows:
        return (f"recipe {recipe.name}: {recipe.paper}, {recipe.row}: the paper shows curves only, so there is no "
                f"number to compare; read metrics.jsonl (and advcore analyze gap) beside its figure\n")
    lines = [f"recipe {recipe.name}: {recipe.paper}, {recipe.row}"
             + (" (this run is the scaled-down Fashion-MNIST twin: the paper's numbers are for the full recipe)"
                if twin else ""),
             "", "| metric | paper | this run | difference |", "|---|---|---|---|"]
    for row in rows:
        run = "not evaluated" if row["run"] is None else f"{row['run']:.2f}"
        diff = "" if row["difference"] is None else f"{row['difference']:+.2f}"
        lines.append(f"| {row['metric'].removesuffix('_acc')} | {row['paper']:.2f} | {run} | {diff} |")
    missing = [r["metric"] for r in rows if r["run"] is None]
    if missing:
        lines += ["", f"not evaluated yet: {', '.join(missing)}; run: "
                      f"{recipe.eval_command(str(result.get('run', 'RUN')))}"]
    return "\n".join(lines) + "\n"


def recipes_markdown(recipes: list[Recipe]) -> str:
    """The docs table: every recipe, its paper row, the paper's numbers, and whether it was reproduced here."""
    lines = ["| recipe | paper row | plugins | paper's numbers | reproduced here |", "|---|---|---|---|---|"]
    for r in recipes:
        numbers = r.numbers()
        if r.reproduced:
            got = ", ".join(f"{k.removesuffix('_acc')} {v:.2f}" for k, v in r.reproduced.items() if k.endswith("_acc"))
            status = f"{got} ({r.reproduced.get('hardware', 'hardware not recorded')})"
        else:
            status = "not yet run"
        plugins = " ".join(f"`{p}`" for p in r.plugins)
        lines.append(f"| `{r.name}` | {r.paper}: {r.row} | {plugins} | {numbers} | {status} |")
    return "\n".join(lines) + "\n"
