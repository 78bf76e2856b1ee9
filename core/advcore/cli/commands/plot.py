"""``advcore plot curves|tradeoff|sweep``: figures (PNG, with the series as JSON beside them).

Registered through the ``advcore.commands`` entry point ``plot``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ...errors import AdvcoreError
from ..options import (ArchOpt, DataDirOpt, DatasetOpt, NormalizeOpt, NormOpt, WidthOpt, parse_eps,
                       source_label)


plot_app = typer.Typer(no_args_is_help=True, help="Figures (PNG + JSON of the series): curves, trade-off, sweeps.")


@plot_app.command("curves")
def plot_curves(
    runs: List[Path] = typer.Argument(..., help="run directories (their metrics.jsonl)"),
    out: Path = typer.Option(Path("curves.png"), "--out", "-o", help="PNG to write (a .json with the series beside it)"),
) -> None:
    """Training curves: clean/robust accuracy, losses and other records per epoch."""
    from ...analyses.plots import plot_training_curves, read_metrics

    plot_training_curves({source_label(r): read_metrics(r) for r in runs}, out)
    typer.echo(f"wrote {out.with_suffix('.png')}")


@plot_app.command("tradeoff")
def plot_tradeoff_cmd(
    sources: List[Path] = typer.Argument(..., help="eval JSON files or run directories"),
    x: str = typer.Option("clean_acc", help="metric on the x axis"),
    y: str = typer.Option("robust_acc", help="metric on the y axis (eval results: e.g. autoattack_acc)"),
    out: Path = typer.Option(Path("tradeoff.png"), "--out", "-o", help="PNG to write"),
) -> None:
    """Accuracy vs robustness scatter, one point per run (HAT Fig. 5)."""
    from ...evaluation.evaluate import read_result
    from ...analyses.plots import plot_tradeoff

    points = []
    for source in sources:
        r = read_result(source)
        if x not in r or y not in r:
            raise AdvcoreError(f"{source} has no {x if x not in r else y}; choose --x/--y among "
                               f"{', '.join(k for k in r if k.endswith('_acc'))}")
        points.append({"label": r["label"], x: r[x], y: r[y]})
    plot_tradeoff(points, out, x=x, y=y)
    typer.echo(f"wrote {out.with_suffix('.png')}")


@plot_app.command("sweep")
def plot_sweep_cmd(
    checkpoints: List[Path] = typer.Argument(..., help="models to compare (run directories, .json, state dicts)"),
    eps_list: Optional[str] = typer.Option(None, "--eps", help="eps values, e.g. 0,2/255,4/255,8/255,16/255"),
    steps_list: Optional[str] = typer.Option(None, "--steps", help="step counts at the run's eps, e.g. 5,10,20,50"),
    attack: str = typer.Option("pgd", help="attack for the sweep: pgd, cw, mim (steps); also fgsm, square, autoattack (eps)"),
    at_eps: Optional[str] = typer.Option(None, "--at-eps", help="eps of a steps sweep (default: the run's)"),
    pgd_steps: int = typer.Option(20, help="steps of an eps sweep"),
    n: Optional[int] = typer.Option(None, help="test samples"),
    norm: Optional[str] = NormOpt,
    device: str = typer.Option("auto"),
    arch: Optional[str] = ArchOpt,
    dataset: Optional[str] = DatasetOpt,
    data_dir: Optional[str] = DataDirOpt,
    width: Optional[int] = WidthOpt,
    normalize: bool = NormalizeOpt,
    out: Path = typer.Option(Path("sweep.png"), "--out", "-o", help="PNG to write"),
    as_json: bool = typer.Option(False, "--json", help="print the series as JSON"),
) -> None:
    """Accuracy vs eps (HAT Fig. 6/10, IAAT Fig. 4) or vs attack steps, several models on one figure."""
    from ...evaluation.evaluate import eval_data, load_target
    from ...analyses.plots import plot_sweep
    from ...analyses.sweeps import eps_sweep, parse_values, steps_sweep

    if (eps_list is None) == (steps_list is None):
        raise AdvcoreError("give exactly one of --eps LIST or --steps LIST")
    series, reference = {}, None
    for path in checkpoints:
        target = load_target(path, device=device, arch=arch, dataset=dataset, data_dir=data_dir, width=width,
                             normalize=normalize)
        xs, ys, info = eval_data(target.dataset, target.data_dir, n, target.seed)
        run_eps = target.eps or info.default_eps
        reference = reference or run_eps
        if eps_list is not None:
            series[source_label(path)] = eps_sweep(target.model, xs, ys, parse_values(eps_list), attack=attack,
                                             norm=target.threat_model(norm), steps=pgd_steps, seed=target.seed)
        else:
            series[source_label(path)] = steps_sweep(target.model, xs, ys, parse_values(steps_list, int),
                                               eps=parse_eps(at_eps) or run_eps, attack=attack,
                                               norm=target.threat_model(norm), seed=target.seed)
    data = plot_sweep(series, out, xlabel="eps" if eps_list is not None else "attack steps",
                      title="Accuracy vs eps" if eps_list is not None else "Accuracy vs attack steps",
                      reference=reference if eps_list is not None else None)
    typer.echo(json.dumps(data) if as_json else f"wrote {out.with_suffix('.png')}")


def register(app: typer.Typer) -> None:
    """Add the ``plot`` group."""
    app.add_typer(plot_app, name="plot")
