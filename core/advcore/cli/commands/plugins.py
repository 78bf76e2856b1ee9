"""``advcore plugins``, ``plan`` and ``new-plugin``: what is installed, how it composes, a new package.

Registered through the ``advcore.commands`` entry point ``plugins``. The plain listing reads
package metadata only (no plugin module, no torch).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ...errors import AdvcoreError
from ..options import PluginOpt, SetOpt, run_config


def plugins(
    name: Optional[str] = typer.Argument(None, help="show one plugin's hooks and options"),
    details: bool = typer.Option(False, "--details", help="hooks and options of every plugin (imports them)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON (with hooks and options)"),
) -> None:
    """List installed plugins; NAME, --details or --json also show hooks and options.

    The plain listing reads entry-point and package metadata only, so it imports neither
    the plugin modules nor torch; the details import the plugins they describe.
    """
    from ...kernel.plugins import installed_plugins

    found = installed_plugins()
    if name is None and not details and not as_json:
        from importlib.metadata import distribution

        for p in found.values():
            summary = distribution(p.package).metadata.get("Summary") or ""
            typer.echo(f"{p.name}  ({p.package} {p.version})  {summary}".rstrip())
        typer.echo("details: advcore plugins NAME, or advcore plugins --details")
        return
    if name is not None and name not in found:
        raise AdvcoreError(f"unknown plugin {name!r}; installed plugins: {', '.join(found)}")
    rows = []
    for p in found.values():
        if name is not None and p.name != name:
            continue
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


def plan(
    plugin: Optional[List[str]] = PluginOpt,
    config: Optional[Path] = typer.Option(None, "--config", "-c"),
    set_: Optional[List[str]] = SetOpt,
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Show the resolved composition: who owns each role and the hook order per step."""
    from ...kernel.plugins import Hooks, build_manager, resolve

    cfg = run_config(plugin, config, set_)
    chosen = resolve(cfg.plugins)
    order = Hooks(build_manager(chosen)).order()
    roles = {role: p.name for p in chosen for role in p.info.roles}
    added = [p.name for p in chosen if p.name not in cfg.plugins]
    step_hooks = ["advcore_select_samples", "advcore_attack_objective", "advcore_generate_adversarial",
                  "advcore_attack_step", "advcore_derive_examples", "advcore_adapt_targets", "advcore_update", "advcore_loss_terms",
                  "advcore_adjust_logits", "advcore_sample_weights", "advcore_after_step"]
    per_step = {h: order[h] for h in step_hooks if order.get(h)}
    lifecycle = {h: v for h, v in order.items() if v and h not in step_hooks and h != "advcore_plugin_info"}
    result = {"plugins": [p.name for p in chosen], "order": {p.name: p.info.order for p in chosen},
              "defaults_added": added, "roles": roles,
              "hooks": {**per_step, **lifecycle}, "per_step": list(per_step), "lifecycle": list(lifecycle)}
    if as_json:
        typer.echo(json.dumps(result, indent=1))
        return
    typer.echo(f"plugins: {', '.join(result['plugins'])}" + (f"  (defaults added: {', '.join(added)})" if added else ""))
    typer.echo("  canonical order (PluginInfo.order, then name; the --plugin order never matters): "
               + ", ".join(f"{p.name}={p.info.order}" for p in chosen))
    for role, name in roles.items():
        typer.echo(f"  {role:<10} {name}")
    for title, hooks in (("per step, in order:", per_step), ("lifecycle:", lifecycle)):
        typer.echo(title)
        for hook, impls in hooks.items():
            indent = "      " if hook in ("advcore_loss_terms", "advcore_adjust_logits", "advcore_sample_weights",
                                      "advcore_attack_step") else "  "
            typer.echo(f"{indent}{hook.removeprefix('advcore_'):<22} {' -> '.join(impls)}")


def new_plugin(
    name: str = typer.Argument(..., help="the plugin's name (--plugin NAME): lowercase letters, digits, hyphens"),
    directory: Path = typer.Option(Path("."), "--dir", "-d", help="folder in which to create advcore-NAME/"),
    also: Optional[List[str]] = typer.Option(None, "--also", help="another plugin in the same package: NAME or "
                                                                 "NAME:ROLE (repeatable)"),
    role: Optional[str] = typer.Option(None, "--role", help="role of plugin NAME: objective, adversary or head "
                                                            "(default: an add-on)"),
) -> None:
    """Write a new plugin package: pyproject with the entry points, options, a stub for every hook, README, tests."""
    from ...kit.scaffold import new_plugin as write_package

    root = write_package(name, directory, also or [], role)
    typer.echo(f"created {root}")
    typer.echo(f"next: pip install -e {root} && pytest {root / 'tests'} && advcore plugins")


def register(app: typer.Typer) -> None:
    """Add ``plugins``, ``plan`` and ``new-plugin``."""
    app.command()(plugins)
    app.command()(plan)
    app.command("new-plugin")(new_plugin)
