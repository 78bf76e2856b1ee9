"""The ``advcore`` command line: train, eval, plugins, plan."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import AdvcoreError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Adversarial training whose methods are plugins.")

PluginOpt = typer.Option(None, "--plugin", "-p", help="enable a plugin (repeatable)")
SetOpt = typer.Option(None, "--set", "-s", help="override a config key: key.sub=value (repeatable)")


def _config(plugin, config, sets, base=None, **fields):
    from ..kernel.config import load_config

    data_plugins = list(plugin or [])
    cfg = load_config(config, sets or [], base=base, **fields)
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
    chosen = _recipe(recipe) if recipe else None
    fields = {"epochs": epochs, "seed": seed, "device": device, "init_from": init_from, "data.dataset": dataset,
              "data.data_dir": data_dir, "data.subset": subset,
              "model.factory": model}
    if resume and out is None:
        raise AdvcoreError("--resume needs --out DIR, the run directory to continue")
    if (fallback or allow_change) and not resume:
        raise AdvcoreError(f"{'--fallback' if fallback else '--allow-change'} only applies with --resume")
    changes: dict = {}
    if resume:  # the run's own config.json; the command line may only restate it (advcore.resume)
        from ..runtime.resume import resume_config

        cfg, changes = resume_config(out, config_file=config, sets=set_, fields=fields, plugins=list(plugin or []),
                                     recipe_base=chosen.run_config(twin, epochs) if chosen else None,
                                     allow_change=allow_change)
        if not fallback:  # a missing or bad last checkpoint is refused before torch loads
            from ..runtime.checkpoint import verify_last

            verify_last(out / "checkpoints")
    else:
        cfg = _config(plugin, config, set_, base=chosen.run_config(twin, epochs) if chosen else None, **fields)
    from ..engine import train as run_training  # torch loads here, after the config is valid

    history = run_training(cfg, out, resume=resume, fallback=fallback, tensorboard=tensorboard,
                           log=lambda line: typer.echo(line), changes=changes)
    if history and os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        last = history[-1]
        typer.echo(f"final: clean_acc={last.get('clean_acc', float('nan')):.4f} "
                   f"robust_acc={last.get('robust_acc', float('nan')):.4f}")
        if chosen and out is not None:
            typer.echo(f"compare with the paper: {chosen.eval_command(str(out))} && advcore report {out}")


def _recipe(name: str):
    from .recipes import find_recipe

    return find_recipe(name)


@app.command()
def recipes(
    name: Optional[str] = typer.Argument(None, help="show one recipe: its config, twin and the commands"),
    markdown: bool = typer.Option(False, "--markdown", help="print the docs table of all recipes"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Paper recipes: each headline row of the seed papers as one command, with the paper's numbers."""
    from .recipes import all_recipes, recipes_markdown

    if name is not None:
        r = _recipe(name)
        if as_json:
            typer.echo(json.dumps({"name": r.name, "paper": r.paper, "row": r.row, "reported": r.reported,
                                   "config": r.run_config(), "twin": r.run_config(twin=True)}, indent=1))
            return
        typer.echo(f"{r.name}: {r.paper}, {r.row}")
        typer.echo("paper's numbers: " + ", ".join(f"{k} {v:.2f}" for k, v in r.reported.items()))
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
            numbers = "  ".join(f"{k.removesuffix('_acc')} {v:.2f}" for k, v in r.reported.items())
            typer.echo(f"{r.name:<{width}}  {'+'.join(r.plugins):<28} {numbers}")


# --- evaluation, reports, plots, margins --------------------------------------------------

ArchOpt = typer.Option(None, "--arch", help="architecture of a plain state dict file (e.g. wrn-28-10, small-cnn)")
DatasetOpt = typer.Option(None, "--dataset", help="dataset of a plain state dict file (default: the run's)")
DataDirOpt = typer.Option(None, "--data-dir", help="folder with the dataset files (default: the run's)")
WidthOpt = typer.Option(None, "--width", help="model.width of a plain state dict file")
NormalizeOpt = typer.Option(False, "--normalize", help="plain state dict trained with dataset mean/std normalisation")
NormOpt = typer.Option(None, "--norm", help="threat model: Linf or L2 (default: the run's attack.norm, else Linf)")
EpsOpt = typer.Option(None, "--eps", help="budget, e.g. 0.1 or 8/255 (default: the run's, else the dataset's)")


def _model_kwargs(sets: Optional[List[str]]) -> dict:
    """``--set model.kwargs.NAME=VALUE`` strings as the factory's keyword arguments."""
    from ..kernel.config import apply_overrides

    bad = [item for item in sets or [] if not item.startswith("model.kwargs.")]
    if bad:
        raise AdvcoreError(f"--set {bad[0]!r}: with --model only model.kwargs.NAME=VALUE can be set")
    return apply_overrides({}, list(sets or [])).get("model", {}).get("kwargs", {})


def _eps(text: Optional[str]) -> Optional[float]:
    """``--eps 0.1`` or ``8/255``: a positive number (checked before torch loads)."""
    if text is None:
        return None
    from ..kernel.config import parse_fraction

    try:
        value = parse_fraction(text)
    except ValueError as exc:
        raise AdvcoreError(f"--eps: {exc}") from None
    try:
        value = float(value)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value == value and value != float("inf")):
        raise AdvcoreError(f"--eps {text}: the budget must be a positive number, e.g. 0.1 or 8/255")
    return value


@app.command("eval")
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
    budget = _eps(eps)
    if checkpoint is not None and not checkpoint.exists():
        raise AdvcoreError(f"checkpoint {checkpoint} not found; pass a run directory, a checkpoint .json or a "
                           f"state dict file")
    if checkpoint is None and model is None:
        from typer._click.globals import get_current_context
        from typer._click.exceptions import MissingParameter

        raise MissingParameter(ctx=get_current_context(), param_type="argument", param_hint="'checkpoint'")
    if checkpoint is not None and (checkpoint.is_dir() or checkpoint.suffix == ".json"):  # refused before torch loads
        from ..runtime.checkpoint import verify_checkpoint

        verify_checkpoint(checkpoint)
    from ..evaluation.evaluate import evaluate_checkpoint, format_result, markdown_table

    if model is None and (weights is not None or set_):
        raise AdvcoreError("--weights and --set need --model package.module:factory (the module to load them into)")
    if model is not None and checkpoint is not None:
        raise AdvcoreError("pass either a checkpoint or --model with --weights, not both")
    model_kwargs = _model_kwargs(set_) if model is not None else None
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


@app.command()
def report(
    sources: List[Path] = typer.Argument(..., help="eval JSON files (advcore eval --json / --out) or run directories"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="write the Markdown table to this file"),
) -> None:
    """A Markdown table of evaluation results, one row per model; runs from a recipe also beside the paper's row."""
    from ..evaluation.evaluate import markdown_table, read_result

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
    from .recipes import comparison_table

    return "\n" + comparison_table(_recipe(ref["name"]), {**result, "run": str(source)}, twin=ref.get("twin", False))


plot_app = typer.Typer(no_args_is_help=True, help="Figures (PNG + JSON of the series): curves, trade-off, sweeps.")
app.add_typer(plot_app, name="plot")


@plot_app.command("curves")
def plot_curves(
    runs: List[Path] = typer.Argument(..., help="run directories (their metrics.jsonl)"),
    out: Path = typer.Option(Path("curves.png"), "--out", "-o", help="PNG to write (a .json with the series beside it)"),
) -> None:
    """Training curves: clean/robust accuracy, losses and other records per epoch."""
    from ..analyses.plots import plot_training_curves, read_metrics

    plot_training_curves({_label(r): read_metrics(r) for r in runs}, out)
    typer.echo(f"wrote {out.with_suffix('.png')}")


@plot_app.command("tradeoff")
def plot_tradeoff_cmd(
    sources: List[Path] = typer.Argument(..., help="eval JSON files or run directories"),
    x: str = typer.Option("clean_acc", help="metric on the x axis"),
    y: str = typer.Option("robust_acc", help="metric on the y axis (eval results: e.g. autoattack_acc)"),
    out: Path = typer.Option(Path("tradeoff.png"), "--out", "-o", help="PNG to write"),
) -> None:
    """Accuracy vs robustness scatter, one point per run (HAT Fig. 5)."""
    from ..evaluation.evaluate import read_result
    from ..analyses.plots import plot_tradeoff

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
    from ..evaluation.evaluate import eval_data, load_target
    from ..analyses.plots import plot_sweep
    from ..analyses.sweeps import eps_sweep, parse_values, steps_sweep

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
            series[_label(path)] = eps_sweep(target.model, xs, ys, parse_values(eps_list), attack=attack,
                                             norm=target.threat_model(norm), steps=pgd_steps, seed=target.seed)
        else:
            series[_label(path)] = steps_sweep(target.model, xs, ys, parse_values(steps_list, int),
                                               eps=_eps(at_eps) or run_eps, attack=attack,
                                               norm=target.threat_model(norm), seed=target.seed)
    data = plot_sweep(series, out, xlabel="eps" if eps_list is not None else "attack steps",
                      title="Accuracy vs eps" if eps_list is not None else "Accuracy vs attack steps",
                      reference=reference if eps_list is not None else None)
    typer.echo(json.dumps(data) if as_json else f"wrote {out.with_suffix('.png')}")


def _label(path: Path) -> str:
    from ..evaluation.evaluate import source_label

    return source_label(path)


@app.command()
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
    from ..evaluation.evaluate import eval_data, load_target
    from ..evaluation.margin import margin_analysis

    loading = dict(device=device, arch=arch, dataset=dataset, data_dir=data_dir, width=width)
    std_target, rob_target = load_target(standard, **loading), load_target(robust, **loading)
    x, y, info = eval_data(rob_target.dataset, rob_target.data_dir, n, rob_target.seed)
    budget = _eps(eps) or rob_target.eps or info.default_eps
    result = margin_analysis(std_target.model, rob_target.model, x, y, eps=budget, norm=rob_target.threat_model(norm),
                             steps=steps, max_alpha=max_alpha)
    if out is not None:
        from ..analyses.plots import plot_margins

        plot_margins(result, out)
    if as_json:
        typer.echo(json.dumps(result))
        return
    for name in ("standard", "robust"):
        r = result[name]
        median = "inf" if r["median"] is None else f"{r['median']:.4f}"
        typer.echo(f"{name:>8}: median margin {median}  above budget ({r['reference']:.3f}) "
                   f"{r['above_reference']:.1%}  never flips {r['censored']}/{r['n']}")


@app.command()
def plugins(
    name: Optional[str] = typer.Argument(None, help="show one plugin's hooks and options"),
    details: bool = typer.Option(False, "--details", help="hooks and options of every plugin (imports them)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON (with hooks and options)"),
) -> None:
    """List installed plugins; NAME, --details or --json also show hooks and options.

    The plain listing reads entry-point and package metadata only, so it imports neither
    the plugin modules nor torch; the details import the plugins they describe.
    """
    from ..kernel.plugins import installed_plugins

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


@app.command()
def plan(
    plugin: Optional[List[str]] = PluginOpt,
    config: Optional[Path] = typer.Option(None, "--config", "-c"),
    set_: Optional[List[str]] = SetOpt,
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Show the resolved composition: who owns each role and the hook order per step."""
    from ..kernel.plugins import Hooks, build_manager, resolve

    cfg = _config(plugin, config, set_)
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


@app.command("new-plugin")
def new_plugin(
    name: str = typer.Argument(..., help="the plugin's name (--plugin NAME): lowercase letters, digits, hyphens"),
    directory: Path = typer.Option(Path("."), "--dir", "-d", help="folder in which to create advcore-NAME/"),
    also: Optional[List[str]] = typer.Option(None, "--also", help="another plugin in the same package: NAME or "
                                                                 "NAME:ROLE (repeatable)"),
    role: Optional[str] = typer.Option(None, "--role", help="role of plugin NAME: objective, adversary or head "
                                                            "(default: an add-on)"),
) -> None:
    """Write a new plugin package: pyproject with the entry points, options, a stub for every hook, README, tests."""
    from ..kit.scaffold import new_plugin as write_package

    root = write_package(name, directory, also or [], role)
    typer.echo(f"created {root}")
    typer.echo(f"next: pip install -e {root} && pytest {root / 'tests'} && advcore plugins")


# --- analyze (generalization gap; plugins add theirs) ---------------------------------------

analyze_app = typer.Typer(no_args_is_help=True, help="Analyse finished runs: generalization gap, and the analyses plugins add.")
app.add_typer(analyze_app, name="analyze")


_ANALYSES_ADDED = False


def _add_plugin_analyses() -> None:
    """Analyses that plugins contribute (entry-point group ``advcore.analyze``: name = a Typer command).

    Loaded only when ``advcore analyze`` runs (``main`` and ``advcore.testing.run_cli`` call this):
    a plugin's module imports torch, and ``--help`` and usage errors must not.
    """
    global _ANALYSES_ADDED
    if _ANALYSES_ADDED:
        return
    _ANALYSES_ADDED = True
    from importlib.metadata import entry_points

    for ep in entry_points(group="advcore.analyze"):
        try:
            analyze_app.command(ep.name)(ep.load())
        except Exception:  # noqa: BLE001 - a broken plugin loses its command, not the CLI ('advcore plugins' names it)
            continue


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
    from ..analyses.analyze import generalization_gap

    result = generalization_gap(run, n=n, pgd_steps=pgd_steps, restarts=restarts, device=device)
    if as_json:
        typer.echo(json.dumps(result))
        return
    for key, value in result.items():
        typer.echo(f"{key:>16}  {value:.4f}" if isinstance(value, float) else f"{key:>16}  {value}")


def register_commands(target: typer.Typer) -> None:
    """Add the commands of installed packages: entry points in the ``advcore.commands`` group.

    Each entry point names a function ``register(app)`` that adds commands to the typer app,
    as llm's ``register_commands`` does. It runs on every ``advcore`` call, so it must not
    import torch at module level: import heavy modules inside the command. A package that
    fails to register is reported in one line and skipped.
    """
    from importlib.metadata import entry_points

    for ep in entry_points(group="advcore.commands"):
        try:
            ep.load()(target)
        except Exception as exc:  # noqa: BLE001 - a broken third-party package must not break advcore
            typer.echo(f"warning: commands from {ep.value} could not be added ({type(exc).__name__}: {exc}); "
                       f"fix or uninstall that package", err=True)


register_commands(app)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"advcore {version('advcore')}")
        except PackageNotFoundError:  # a source tree that was never installed
            typer.echo("advcore (not installed: no version)")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                       help="print the version and exit")) -> None:
    """Adversarial training whose methods are plugins."""


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point with the documented exit codes (docs/errors.md#exit-codes).

    0 ok, 1 a problem the user can fix (one line ``error: ...``), 2 a usage error (click's
    usage message), 3 a flagged evaluation, 130 interrupted. Click runs in non-standalone
    mode so that AdvcoreError reaches us; its exceptions are typer's vendored click
    (``typer._click``), not the ``click`` package. ADVCORE_RAISE_ERRORS=1 re-raises.
    """
    from typer._click import exceptions as cx

    args = sys.argv[1:] if argv is None else argv
    if "analyze" in args:
        _add_plugin_analyses()
    try:
        code = app(args=argv, standalone_mode=False, prog_name="advcore")
    except AdvcoreError as exc:
        if os.environ.get("ADVCORE_RAISE_ERRORS") == "1":
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except cx.ClickException as exc:  # usage errors, bad parameters: exit 2
        exc.show()
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):  # typer's own classes, not typer._click's
        typer.echo("error: interrupted", err=True)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except BrokenPipeError:  # `advcore plugins | head`
        sys.exit(0)
    except Exception as exc:  # a bug, not bad input: still one line, and how to get the details
        if os.environ.get("ADVCORE_RAISE_ERRORS") == "1":
            raise
        detail = str(exc).splitlines()[0] if str(exc) else ""
        typer.echo(f"error: internal error {type(exc).__name__}: {detail}; rerun with ADVCORE_RAISE_ERRORS=1 for "
                   f"the traceback and report it", err=True)
        sys.exit(1)
    if code == 130:  # typer turned a KeyboardInterrupt (a second Ctrl-C) into this code
        typer.echo("error: interrupted at once by a second signal; the last complete checkpoint was kept", err=True)
    sys.exit(code if isinstance(code, int) else 0)


@app.command("export")
def export(
    run: Path = typer.Argument(..., help="run directory or checkpoint .json"),
    out: Path = typer.Argument(..., help="the .safetensors file to write"),
    ema: bool = typer.Option(False, "--ema", help="export the EMA weights (train with ema.decay)"),
    which: str = typer.Option("best", "--checkpoint", help="of a run directory: best (held-out PGD) or last"),
) -> None:
    """Write the trained model as a plain PyTorch state dict and print how to load it."""
    from ..evaluation.export import export_state_dict

    path, lines = export_state_dict(run, out, ema=ema, checkpoint=which)
    typer.echo(f"wrote {path} ({'EMA' if ema else 'model'} weights); load it with:")
    for line in lines:
        typer.echo(f"    {line}")


if __name__ == "__main__":  # pragma: no cover
    main()
