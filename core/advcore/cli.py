"""The ``advcore`` command line: train, eval, plugins, plan."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .errors import AdvcoreError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Adversarial training whose methods are plugins.")

PluginOpt = typer.Option(None, "--plugin", "-p", help="enable a plugin (repeatable)")
SetOpt = typer.Option(None, "--set", "-s", help="override a config key: key.sub=value (repeatable)")


def _config(plugin, config, sets, **fields):
    from .config import load_config

    data_plugins = list(plugin or [])
    cfg = load_config(config, sets or [], **fields)
    if data_plugins:
        cfg = cfg.model_copy(update={"plugins": list(dict.fromkeys([*cfg.plugins, *data_plugins]))})
    return cfg


@app.command()
def train(
    plugin: Optional[List[str]] = PluginOpt,
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML or YAML config file"),
    set_: Optional[List[str]] = SetOpt,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="run directory (metrics, checkpoints)"),
    epochs: Optional[int] = typer.Option(None, help="number of epochs"),
    dataset: Optional[str] = typer.Option(None, help="digits, fashion-mnist, mnist, cifar10, cifar100, svhn, folder"),
    data_dir: Optional[str] = typer.Option(None, help="folder with the dataset files"),
    subset: Optional[int] = typer.Option(None, help="first N training samples, class-balanced"),
    seed: Optional[int] = typer.Option(None, help="random seed"),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda"),
    init_from: Optional[str] = typer.Option(None, help="start from this checkpoint's model weights"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its last checkpoint"),
) -> None:
    """Train a model with the given plugins; prints clean and robust accuracy per epoch."""
    from .trainer import train as run_training

    cfg = _config(plugin, config, set_, epochs=epochs, seed=seed, device=device, init_from=init_from,
                  **{"data.dataset": dataset, "data.data_dir": data_dir, "data.subset": subset})
    if resume and out is None:
        raise AdvcoreError("--resume needs --out DIR, the run directory to continue")
    history = run_training(cfg, out, resume=resume, log=lambda line: typer.echo(line))
    if history:
        last = history[-1]
        typer.echo(f"final: clean_acc={last.get('clean_acc', float('nan')):.4f} "
                   f"robust_acc={last.get('robust_acc', float('nan')):.4f}")


@app.command("eval")
def eval_(
    checkpoint: Path = typer.Argument(..., help="run directory or checkpoint .json"),
    attack: Optional[List[str]] = typer.Option(None, "--attack", "-a", help="pgd, cw, autoattack (repeatable)"),
    n: Optional[int] = typer.Option(None, help="test samples to evaluate (default: all)"),
    eps: Optional[float] = typer.Option(None, help="Linf budget (default: the run's)"),
    pgd_steps: int = typer.Option(20, help="PGD steps"),
    restarts: int = typer.Option(1, help="PGD restarts"),
    aa_version: str = typer.Option("standard", help="AutoAttack version: standard, plus, rand"),
    device: str = typer.Option("auto"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Clean accuracy and accuracy under attacks for a checkpoint."""
    from .evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(checkpoint, attacks=list(attack or ["pgd", "autoattack"]), n=n, eps=eps,
                                 pgd_steps=pgd_steps, restarts=restarts, device=device, aa_version=aa_version)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        for key, value in result.items():
            typer.echo(f"{key:>16}  {value:.4f}" if isinstance(value, float) else f"{key:>16}  {value}")


@app.command()
def plugins(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """List installed plugins: name, package, hooks, options with defaults."""
    from .plugins import installed_plugins

    rows = []
    for p in installed_plugins().values():
        try:
            p.load()
        except AdvcoreError as exc:
            typer.echo(f"warning: {exc}", err=True)
            continue
        rows.append({"name": p.name, "package": p.package, "version": p.version, "summary": p.info.summary,
                     "roles": list(p.info.roles), "hooks": p.hooks, "options": _options(p.info.options)})
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    for r in rows:
        typer.echo(f"{r['name']}  ({r['package']} {r['version']})  {r['summary']}")
        typer.echo(f"    hooks: {', '.join(h.removeprefix('advcore_') for h in r['hooks'])}")
        for key, opt in r["options"].items():
            typer.echo(f"    --set options.{r['name']}.{key}={json.dumps(opt['default'])}  {opt['description']}")


def _options(model) -> dict:
    if model is None:
        return {}
    return {name: {"default": f.default if not callable(f.default_factory) else f.default_factory(),
                   "description": f.description or ""} for name, f in model.model_fields.items()}


@app.command()
def plan(
    plugin: Optional[List[str]] = PluginOpt,
    config: Optional[Path] = typer.Option(None, "--config", "-c"),
    set_: Optional[List[str]] = SetOpt,
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Show the resolved composition: who owns each role and the hook order per step."""
    from .plugins import Hooks, build_manager, resolve

    cfg = _config(plugin, config, set_)
    chosen = resolve(cfg.plugins)
    order = Hooks(build_manager(chosen)).order()
    roles = {role: p.name for p in chosen for role in p.info.roles}
    added = [p.name for p in chosen if p.name not in cfg.plugins]
    result = {"plugins": [p.name for p in chosen], "defaults_added": added, "roles": roles,
              "hooks": {k: v for k, v in order.items() if v}}
    if as_json:
        typer.echo(json.dumps(result, indent=1))
        return
    typer.echo(f"plugins: {', '.join(result['plugins'])}" + (f"  (defaults added: {', '.join(added)})" if added else ""))
    for role, name in roles.items():
        typer.echo(f"  {role:<10} {name}")
    typer.echo("per step:")
    for hook, impls in result["hooks"].items():
        typer.echo(f"  {hook.removeprefix('advcore_'):<22} {' -> '.join(impls)}")


def main() -> None:
    """Entry point: user errors print one line and exit 2 (ADVCORE_RAISE_ERRORS=1 re-raises)."""
    try:
        app(standalone_mode=False)
    except AdvcoreError as exc:
        if os.environ.get("ADVCORE_RAISE_ERRORS") == "1":
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors and aborts
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, (click.exceptions.Abort, KeyboardInterrupt)):
            typer.echo("aborted", err=True)
            sys.exit(130)
        raise


if __name__ == "__main__":  # pragma: no cover
    main()
