"""``advcore export``: a run's model as a plain PyTorch state dict (``.safetensors``).

Registered through the ``advcore.commands`` entry point ``export``.
"""

from __future__ import annotations

from pathlib import Path

import typer


def export(
    run: Path = typer.Argument(..., help="run directory or checkpoint .json"),
    out: Path = typer.Argument(..., help="the .safetensors file to write"),
    ema: bool = typer.Option(False, "--ema", help="export the EMA weights (train with ema.decay)"),
    which: str = typer.Option("best", "--checkpoint", help="of a run directory: best (held-out PGD) or last"),
) -> None:
    """Write the trained model as a plain PyTorch state dict and print how to load it."""
    from ...evaluation.export import export_state_dict

    path, lines = export_state_dict(run, out, ema=ema, checkpoint=which)
    typer.echo(f"wrote {path} ({'EMA' if ema else 'model'} weights); load it with:")
    for line in lines:
        typer.echo(f"    {line}")


def register(app: typer.Typer) -> None:
    """Add ``export``."""
    app.command("export")(export)
