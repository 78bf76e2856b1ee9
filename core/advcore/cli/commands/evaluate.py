"""``advcore eval``, ``report`` and ``margin``: trained models under attack, results as tables.

Registered through the ``advcore.commands`` entry point ``evaluate``; arguments are checked
before torch loads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ...errors import AdvcoreError
from ..options import (ArchOpt, DataDirOpt, DatasetOpt, EpsOpt, NormalizeOpt, NormOpt, WidthOpt, factory_kwargs,
                       parse_eps)


def eval_(
    checkpoint: Optional[Path] = typer.Argument(None, help="run directory, checkpoint .json, or state dict "
                                                           "(.safetensors/.pt)"),
    attack: Optional[List[str]] = typer.Option(
        None, "--attack", "-a", help="pgd, pgd-K, cw, mim, fgsm, square, square-Q, autoattack (repeatable; "
                                     "default: pgd and autoattack)"),
    n: Optional[int] = typer.Option(None, min=1, help="test samples to evaluate (default: all)"),
    eps: Optional[str] = EpsOpt,
    norm: Optional[str] = NormOpt,
    pgd_steps: int = typer.Option(20, min=1, help="steps of pgd, cw and mim"),
    restarts: int = typer.Option(1, min=1, help="random restarts of pgd and cw"),
    step_size: Optional[float] = typer.Option(None, help="step size of pgd and cw (default eps/4)"),
    square_queries: int = typer.Option(5000, min=1, help="queries of the square attack"),
    aa_version: str = typer.Option("standard", help="AutoAttack version: standard, plus, rand, custom"),
    aa_attack: Optional[List[str]] = typer.Option(
        None, "--aa-attack", help="with --aa-version custom: apgd-ce, apgd-dlr, apgd-t, fab, fab-t, square (repeatable)"),
    batch_size: int = typer.Option(256, min=1, help="samples per attack batch"),
    device: str = typer.Option("auto", help="auto, cpu, cuda"),
    ema: bool = typer.Option(False, "--ema", help="evaluate the checkpoint's EMA weights (train with ema.decay)"),
    arch: Optional[str] = ArchOpt,
    dataset: Optional[str] = DatasetOpt,
    data_dir: Optional[str] = DataDirOpt,
    width: Optional[int] = WidthOpt,
    normalize: bool = NormalizeOpt,
    checks: bool = typer.Option(False, "--checks", help="run the gradient-masking sanity checks; exit 3 if one fails"),
    surrogate: Optional[Path] = typer.Option(None, "--surrogate", help="model for the transfer check (with --checks)"),
    corruptions: Optional[Path] = typer.Option(None, "--corruptions", help="CIFAR-10-C style folder of .npy files"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="write eval.json and eval.md here (and the "
                                                                  "AutoAttack resume state; default: RUN/eval)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    markdown: bool = typer.Option(False, "--markdown", help="print a Markdown table"),
    which: str = typer.Option("best", "--checkpoint", help="of a run directory: best (held-out PGD) or last"),
    model: Optional[str] = typer.Option(None, "--model", help="your nn.Module: package.module:factory (with "
                                                                "--weights and --dataset)"),
    weights: Optional[Path] = typer.Option(None, "--weights", help="state dict (.safetensors/.pt) for --model"),
    set_: Optional[List[str]] = typer.Option(None, "--set", "-s", help="model.kwargs.NAME=VALUE for --model"),
) -> None:
    """Clean accuracy and accuracy under attacks for a checkpoint, a state dict file or your own model."""
    budget = parse_eps(eps)
    if checkpoint is not None and not checkpoint.exists():
        raise AdvcoreError(f"checkpoint {checkpoint} not found; pass a run directory, a checkpoint .json or a "
                           f"state dict file")
    if checkpoint is None and model is None:
        from typer._click.globals import get_current_context
        from typer._click.exceptions import MissingParameter

        raise MissingParameter(ctx=get_current_context(), param_type="argument", param_hint="'checkpoint'")
    if checkpoint is not None and (checkpoint.is_dir() or checkpoint.suffix == ".json"):  # refused before torch loads
        from ...runtime.checkpoint import verify_checkpoint

        verify_checkpoint(checkpoint)
    from ...evaluation.evaluate import evaluate_checkpoint, format_result, markdown_table

    if model is None and (weights is not None or set_):
        raise AdvcoreError("--weights and --set need --model package.module:factory (the module to load them into)")
    if model is not None and checkpoint is not None:
        raise AdvcoreError("pass either a checkpoint or --model with --weights, not both")
    model_kwargs = factory_kwargs(set_) if model is not None else None
    result = evaluate_checkpoint(
        weights if model is not None else checkpoint, attacks=list(attack or ["pgd", "autoattack"]), n=n,
        eps=budget, norm=norm, pgd_steps=pgd_steps,
        restarts=restarts, step_size=step_size, device=device, aa_version=aa_version, aa_attacks=aa_attack,
        square_queries=square_queries, batch_size=batch_size, ema=ema, arch=arch, dataset=dataset, data_dir=data_dir,
        width=width, normalize=normalize, checks=checks, surrogate=surrogate, corruptions=corruptions, out=out,
        checkpoint=which, model=model, model_kwargs=model_kwargs)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(json.dumps(result, indent=1))
        (out / "eval.md").write_text(markdown_table([result]))
    if as_json:
        typer.echo(json.dumps(result))
    elif markdown:
        typer.echo(markdown_table([result]), nl=False)
    else:
        typer.echo(format_result(result))
    if checks and not result["checks"]["passed"]:
        typer.echo(f"FLAGGED: possible gradient masking, failed checks: {', '.join(result['checks']['failed'])}; "
                   f"these robustness numbers are not trustworthy", err=True)
        raise typer.Exit(3)



def report(
    sources: List[Path] = typer.Argument(..., help="eval JSON files (advcore eval --json / --out) or run directories"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="write the Markdown table to this file"),
) -> None:
    """A Markdown table of evaluation results, one row per model; runs from a recipe also beside the paper's row."""
    from ...evaluation.evaluate import markdown_table, read_result

    results = [read_result(s) for s in sources]
    table = markdown_table(results)
    for source, result in zip(sources, results):
        table += _recipe_comparison(source, result)
    if out is not None:
        out.write_text(table)
    typer.echo(table, nl=False)


def _recipe_comparison(source: Path, result: dict) -> str:
    """For a run started with --recipe: its numbers beside the paper's."""
    config = source / "config.json"
    if not (source.is_dir() and config.is_file()):
        return ""
    ref = json.loads(config.read_text()).get("recipe")
    if not ref:
        return ""
    from ..recipes import comparison_table, find_recipe

    return "\n" + comparison_table(find_recipe(ref["name"]), {**result, "run": str(source)},
                                   twin=ref.get("twin", False))


def margin(
    standard: Path = typer.Argument(..., help="standard (non-robust) model: gives the directions R_init"),
    robust: Path = typer.Argument(..., help="robust model whose margins along R_init are measured"),
    n: int = typer.Option(512, help="test samples (HAT uses 512-1024)"),
    eps: Optional[str] = EpsOpt,
    norm: Optional[str] = NormOpt,
    steps: int = typer.Option(20, help="PGD steps on the standard model"),
    max_alpha: Optional[float] = typer.Option(None, help="largest |alpha| searched (default sqrt(d))"),
    device: str = typer.Option("auto"),
    arch: Optional[str] = ArchOpt,
    dataset: Optional[str] = DatasetOpt,
    data_dir: Optional[str] = DataDirOpt,
    width: Optional[int] = WidthOpt,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG with histogram and scatter (+ .json)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON (with per-sample margins)"),
) -> None:
    """Directional margin along initial adversarial directions (HAT Sec. 3, Tables 1/5): median and histogram."""
    from ...evaluation.evaluate import eval_data, load_target
    from ...evaluation.margin import margin_analysis

    loading = dict(device=device, arch=arch, dataset=dataset, data_dir=data_dir, width=width)
    std_target, rob_target = load_target(standard, **loading), load_target(robust, **loading)
    x, y, info = eval_data(rob_target.dataset, rob_target.data_dir, n, rob_target.seed)
    budget = parse_eps(eps) or rob_target.eps or info.default_eps
    result = margin_analysis(std_target.model, rob_target.model, x, y, eps=budget, norm=rob_target.threat_model(norm),
                             steps=steps, max_alpha=max_alpha)
    if out is not None:
        from ...analyses.plots import plot_margins

        plot_margins(result, out)
    if as_json:
        typer.echo(json.dumps(result))
        return
    for name in ("standard", "robust"):
        r = result[name]
        median = "inf" if r["median"] is None else f"{r['median']:.4f}"
        typer.echo(f"{name:>8}: median margin {median}  above budget ({r['reference']:.3f}) "
                   f"{r['above_reference']:.1%}  never flips {r['censored']}/{r['n']}")


def register(app: typer.Typer) -> None:
    """Add ``eval``, ``report`` and ``margin``."""
    app.command("eval")(eval_)
    app.command()(report)
    app.command()(margin)
