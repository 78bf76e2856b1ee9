"""``advcore analyze``: analyses of finished runs; ``gap`` here, and those plugins add.

Registered through the ``advcore.commands`` entry point ``analyze``.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.core import TyperGroup


class PluginAnalyses(TyperGroup):
    """The ``analyze`` group, with the analyses plugins contribute (entry-point group
    ``advcore.analyze``: name = a Typer command function).

    They are added the first time the group lists its commands or is asked for one it does
    not have, that is only when ``advcore analyze [NAME]`` runs for a plugin's analysis or the
    list: a plugin's module may import torch, and ``advcore --help``, ``advcore analyze gap``
    and their usage errors must not. A plugin that fails to load loses its
    command, not the CLI (``advcore plugins`` names the broken plugin).
    """

    _added = False

    def _add_plugin_analyses(self) -> None:
        if self._added:
            return
        self._added = True
        from importlib.metadata import entry_points

        for ep in entry_points(group="advcore.analyze"):
            if ep.name in self.commands:  # a built-in analysis keeps its name
                typer.echo(f"warning: {ep.value} would replace the built-in 'advcore analyze {ep.name}' and was not "
                           f"added; rename that package's analysis", err=True)
                continue
            try:
                single = typer.Typer(add_completion=False)
                single.command(ep.name)(ep.load())
                self.add_command(typer.main.get_command(single), ep.name)
            except Exception:  # noqa: BLE001 - see the class docstring
                continue

    def list_commands(self, ctx):
        self._add_plugin_analyses()
        return super().list_commands(ctx)

    def get_command(self, ctx, cmd_name):
        if cmd_name not in self.commands:  # ``advcore analyze gap`` needs no plugin module
            self._add_plugin_analyses()
        return super().get_command(ctx, cmd_name)


analyze_app = typer.Typer(cls=PluginAnalyses, no_args_is_help=True,
                          help="Analyse finished runs: generalization gap, and the analyses plugins add.")


@analyze_app.command("gap")
def analyze_gap(
    run: Path = typer.Argument(..., help="run directory or checkpoint .json"),
    n: int = typer.Option(1000, help="samples from the training subset and from the test set"),
    pgd_steps: int = typer.Option(10, help="PGD steps"),
    restarts: int = typer.Option(1, help="PGD restarts"),
    device: str = typer.Option("auto"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """PGD accuracy on the samples the run trained on versus the test set (the generalization gap)."""
    from ...analyses.analyze import generalization_gap

    result = generalization_gap(run, n=n, pgd_steps=pgd_steps, restarts=restarts, device=device)
    if as_json:
        typer.echo(json.dumps(result))
        return
    for key, value in result.items():
        typer.echo(f"{key:>16}  {value:.4f}" if isinstance(value, float) else f"{key:>16}  {value}")


def register(app: typer.Typer) -> None:
    """Add the ``analyze`` group."""
    app.add_typer(analyze_app, name="analyze")
