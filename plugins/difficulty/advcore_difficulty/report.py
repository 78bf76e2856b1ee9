"""``advcore analyze difficulty``: d(x) per trained sample as a CSV, D-distances, group loss curves.

The command is contributed to the core CLI through the ``advcore.analyze`` entry-point group,
so the core's ``analyze`` group lists it without naming this plugin.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Optional

import typer

from advcore import checkpoint_paths

from .scores import d_distance, group_curves, load_table, write_csv

__all__ = ["difficulty_report", "command"]


def difficulty_report(run: str | Path, *, csv: str | Path | None = None, compare: list[str | Path] = (),
                      groups: int = 0) -> dict[str, Any]:
    """Write the run's d(x) per trained sample to a CSV; D-distances to other runs; group loss curves."""
    table, history = load_table(run)
    if csv is None:
        manifest = checkpoint_paths(run)
        csv = manifest.parent.parent / "difficulty.csv" if manifest.parent.name == "checkpoints" else manifest.with_suffix(".difficulty.csv")
    report: dict[str, Any] = {"run": str(run), "csv": str(write_csv(table, csv)), "samples": len(table),
                              "mean_loss": table.loss.mean().item()}
    if compare:
        report["d_distance"] = {}
        for other in compare:
            d1, d2 = table.aligned(load_table(other)[0])
            report["d_distance"][str(other)] = d_distance(d1, d2)
    if groups:
        report["group_loss"] = group_curves(table, history["loss_sum"], history["visits"], groups)
    return report


def command(
    run: Path = typer.Argument(..., help="run directory or checkpoint .json trained with --plugin difficulty"),
    csv: Optional[Path] = typer.Option(None, "--csv", help="where to write index,label,loss,difficulty,visits "
                                                          "(default: RUN/difficulty.csv)"),
    compare: Optional[List[Path]] = typer.Option(None, "--compare", help="another run: print the D-distance (repeatable)"),
    groups: int = typer.Option(0, help="print the average loss per epoch of G groups by difficulty (G0 hardest)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Instance difficulty d(x) (Eq. 1 of Liu et al.) from the run's per-sample loss history."""
    report = difficulty_report(run, csv=csv, compare=list(compare or []), groups=groups)
    if as_json:
        typer.echo(json.dumps(report))
        return
    typer.echo(f"{report['samples']} samples, mean loss {report['mean_loss']:.4f}; wrote {report['csv']}")
    for other, dist in report.get("d_distance", {}).items():
        typer.echo(f"D-distance to {other}: {dist:.4f}  (independent random orderings: 1/3)")
    for g, curve in enumerate(report.get("group_loss", [])):
        typer.echo(f"G{g}: " + " ".join(f"{v:.3f}" for v in curve))
