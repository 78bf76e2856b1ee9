"""``advcore train`` and ``advcore recipes``: training runs, from flags, a config file or a paper recipe.

Registered through the ``advcore.commands`` entry point ``train`` (the core's pyproject.toml),
like any package's commands. torch loads only once the config is valid.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Optional

import typer

from ...errors import AdvcoreError
from ..options import PluginOpt, SetOpt, run_config


def train(
    plugin: Optional[List[str]] = PluginOpt,
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML or YAML config file"),
    set_: Optional[List[str]] = SetOpt,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="run directory (metrics, checkpoints)"),
    epochs: Optional[int] = typer.Option(None, help="number of epochs"),
    dataset: Optional[str] = typer.Option(None, help="digits, fashion-mnist, mnist, cifar10, cifar100, svhn, folder, "
                                                      "or package.module:factory (called with train=True/False)"),
    data_dir: Optional[str] = typer.Option(None, help="folder with the dataset files"),
    subset: Optional[str] = typer.Option(None, help="N (first N, class-balanced), random:N, or KIND:N ranked by an enabled plugin"),
    seed: Optional[int] = typer.Option(None, help="random seed"),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda"),
    init_from: Optional[str] = typer.Option(None, help="start from this checkpoint's model weights"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its last checkpoint"),
    fallback: bool = typer.Option(False, "--fallback", help="with --resume: walk back to the newest intact checkpoint "
                                                              "(previous, best) if the last is missing or corrupt"),
    allow_change: bool = typer.Option(False, "--allow-change", help="with --resume: accept options that change the run's "
                                                                      "config (recorded in OUT/config_history.jsonl)"),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="also write the metrics for TensorBoard to OUT/tensorboard"),
    recipe: Optional[str] = typer.Option(None, "--recipe", "-r", help="start from a paper recipe (advcore recipes); "
                                                                        "other flags override it"),
    twin: bool = typer.Option(False, "--twin", help="with --recipe: its scaled-down Fashion-MNIST twin"),
    model: Optional[str] = typer.Option(None, "--model", help="your nn.Module: package.module:factory "
                                                                "(options: --set model.kwargs.NAME=VALUE)"),
) -> None:
    """Train a model with the given plugins; prints clean and robust accuracy per epoch."""
    if twin and recipe is None:
        raise AdvcoreError("--twin needs --recipe NAME; run 'advcore recipes' to list them")
    from ..recipes import find_recipe  # the recipe files (and pydantic) only when a command needs them

    chosen = find_recipe(recipe) if recipe else None
    fields = {"epochs": epochs, "seed": seed, "device": device, "init_from": init_from, "data.dataset": dataset,
              "data.data_dir": data_dir, "data.subset": subset,
              "model.factory": model}
    if resume and out is None:
        raise AdvcoreError("--resume needs --out DIR, the run directory to continue")
    if (fallback or allow_change) and not resume:
        raise AdvcoreError(f"{'--fallback' if fallback else '--allow-change'} only applies with --resume")
    changes: dict = {}
    if resume:  # the run's own config.json; the command line may only restate it (advcore.resume)
        from ...runtime.resume import resume_config

        cfg, changes = resume_config(out, config_file=config, sets=set_, fields=fields, plugins=list(plugin or []),
                                     recipe_base=chosen.run_config(twin, epochs) if chosen else None,
                                     allow_change=allow_change)
        if not fallback:  # a missing or bad last checkpoint is refused before torch loads
            from ...runtime.checkpoint import verify_last

            verify_last(out / "checkpoints")
    else:
        cfg = run_config(plugin, config, set_, base=chosen.run_config(twin, epochs) if chosen else None, **fields)
    from ...engine import train as run_training  # torch loads here, after the config is valid

    history = run_training(cfg, out, resume=resume, fallback=fallback, tensorboard=tensorboard,
                           log=lambda line: typer.echo(line), changes=changes)
    if history and os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        last = history[-1]
        typer.echo(f"final: clean_acc={last.get('clean_acc', float('nan')):.4f} "
                   f"robust_acc={last.get('robust_acc', float('nan')):.4f}")
        if chosen and out is not None:
            typer.echo(f"compare with the paper: {chosen.eval_command(str(out))} && advcore report {out}")



def recipes(
    name: Optional[str] = typer.Argument(None, help="show one recipe: its config, twin and the commands"),
    markdown: bool = typer.Option(False, "--markdown", help="print the docs table of all recipes"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Paper recipes: each headline row of the seed papers as one command, with the paper's numbers."""
    from ..recipes import all_recipes, find_recipe, recipes_markdown

    if name is not None:
        r = find_recipe(name)
        if as_json:
            typer.echo(json.dumps({"name": r.name, "paper": r.paper, "row": r.row, "reported": r.reported,
                                   "config": r.run_config(), "twin": r.run_config(twin=True)}, indent=1))
            return
        typer.echo(f"{r.name}: {r.paper}, {r.row}")
        typer.echo("paper's numbers: " + r.numbers(short=False))
        if r.notes:
            typer.echo(f"notes: {r.notes}")
        typer.echo(f"file: {r.path}")
        typer.echo(f"run:  advcore train --recipe {r.name} --data-dir DATA --out runs/{r.name.replace('/', '-')}")
        typer.echo(f"eval: {r.eval_command('runs/' + r.name.replace('/', '-'))}")
        typer.echo(f"twin: advcore train --recipe {r.name} --twin   (overrides: "
                   + ", ".join(f"{k}={v}" for k, v in r.twin.items()) + ")" if r.twin else
                   f"twin: advcore train --recipe {r.name} --twin")
        return
    found = all_recipes()
    if as_json:
        typer.echo(json.dumps([{"name": r.name, "paper": r.paper, "row": r.row, "plugins": r.plugins,
                                "reported": r.reported} for r in found], indent=1))
    elif markdown:
        typer.echo(recipes_markdown(found), nl=False)
    elif not found:
        typer.echo("no recipes found; set ADVCORE_RECIPES to a folder of <paper>/<row>.toml files")
    else:
        width = max(len(r.name) for r in found)
        for r in found:
            numbers = r.numbers("  ")
            typer.echo(f"{r.name:<{width}}  {'+'.join(r.plugins):<28} {numbers}")


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``recipes``."""
    app.command()(train)
    app.command()(recipes)
