"""Pictures of evaluations and runs: PNG files (matplotlib, no display needed) plus a JSON sidecar.

Every function writes ``<name>.png`` and ``<name>.json`` holding exactly the series drawn, and
returns that dict, so a figure can be checked (and re-drawn elsewhere) without reading pixels.
Figures are built with ``matplotlib.figure.Figure`` (the Agg canvas), never pyplot's global state.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

from ..errors import AdvcoreError

__all__ = ["read_metrics", "plot_sweep", "plot_training_curves", "plot_tradeoff", "plot_margins", "curve_series"]

_SKIP = {"epoch", "lr", "seconds", "eval_seconds", "eval_n"}


def _figure(rows: int = 1, cols: int = 1, size=(6.0, 4.0)):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise AdvcoreError("plots need matplotlib; pip install matplotlib") from None
    fig = Figure(figsize=(size[0] * cols, size[1] * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def _save(fig, path: str | Path, series: dict[str, Any]) -> dict[str, Any]:
    path = Path(path).with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    path.with_suffix(".json").write_text(json.dumps(series, indent=1))
    return series


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records of a run (its ``metrics.jsonl``)."""
    path = Path(run_dir)
    path = path / "metrics.jsonl" if path.is_dir() else path
    if not path.is_file():
        raise AdvcoreError(f"{path} not found; pass a run directory written by 'advcore train --out'")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_sweep(series: Mapping[str, Mapping[str, list]], path: str | Path, *, xlabel: str = "eps",
               title: str = "Accuracy vs attack budget", reference: float | None = None) -> dict[str, Any]:
    """Accuracy against eps (or steps) for several models on one axis; ``series[label] = {"x", "acc"}``."""
    fig, (ax,) = _figure()
    for label, s in series.items():
        ax.plot(s["x"], [100 * a for a in s["acc"]], marker="o", label=label)
    if reference is not None:
        ax.axvline(reference, color="red", linestyle="--", linewidth=1, label="training eps")
    ax.set(xlabel=xlabel, ylabel="accuracy (%)", title=title, ylim=(-2, 102))
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path, {"xlabel": xlabel, "reference": reference, "series": {k: dict(v) for k, v in series.items()}})


def curve_series(records: list[dict[str, Any]]) -> dict[str, dict[str, list]]:
    """Split a run's records into panels: accuracies (``*_acc``), losses (``*loss*``), other numbers."""
    panels: dict[str, dict[str, list]] = {"accuracy": {}, "loss": {}, "other": {}}
    for rec in records:
        for key, value in rec.items():
            if key in _SKIP or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            panel = "accuracy" if key.endswith("_acc") else "loss" if "loss" in key else "other"
            panels[panel].setdefault(key, [[], []])
            panels[panel][key][0].append(rec.get("epoch"))
            panels[panel][key][1].append(value)
    return {name: {k: {"epoch": v[0], "value": v[1]} for k, v in keys.items()} for name, keys in panels.items() if keys}


def plot_training_curves(runs: Mapping[str, list[dict[str, Any]]], path: str | Path) -> dict[str, Any]:
    """Per-epoch curves of one or more runs: accuracy panel (clean/robust, EMA), losses, other records."""
    series = {label: curve_series(records) for label, records in runs.items()}
    names = [p for p in ("accuracy", "loss", "other") if any(p in s for s in series.values())]
    if not names:
        raise AdvcoreError("no numeric metrics to plot; the runs' metrics.jsonl files are empty")
    fig, axes = _figure(1, len(names), size=(5.0, 4.0))
    styles = ["-", "--", ":", "-."]
    for ax, panel in zip(axes, names):
        for run_no, (label, s) in enumerate(series.items()):
            for key, curve in s.get(panel, {}).items():
                scale = 100 if panel == "accuracy" else 1
                name = key if len(series) == 1 else f"{label}: {key}"
                ax.plot(curve["epoch"], [scale * v for v in curve["value"]], styles[run_no % 4], marker=".",
                        label=name)
        ax.set(xlabel="epoch", ylabel="%" if panel == "accuracy" else panel, title=panel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path, {"runs": series})


def plot_tradeoff(points: list[dict[str, Any]], path: str | Path, *, x: str = "clean_acc", y: str = "robust_acc",
                  title: str = "Accuracy vs robustness") -> dict[str, Any]:
    """One labelled point per run: clean accuracy against robust accuracy (HAT Fig. 5)."""
    fig, (ax,) = _figure()
    for p in points:
        ax.scatter(100 * p[x], 100 * p[y], s=36)
        ax.annotate(p["label"], (100 * p[x], 100 * p[y]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set(xlabel=f"{x} (%)", ylabel=f"{y} (%)", title=title)
    ax.grid(alpha=0.3)
    return _save(fig, path, {"x": x, "y": y, "points": points})


def plot_margins(analysis: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """Histogram of margins along R_init for both models, and robust vs standard margin (HAT Fig. 4)."""
    fig, (hist, scatter) = _figure(1, 2, size=(5.0, 4.0))
    cap = analysis["max_alpha"]
    values = {name: [cap if m is None else m for m in analysis[name]["margins"]] for name in ("standard", "robust")}
    for name, ms in values.items():
        hist.hist(ms, bins=30, range=(0, cap), alpha=0.6,
                  label=f"{name} (median {_median_text(analysis[name]['median'])})")
    ref = analysis["robust"].get("reference")
    for ax in (hist, scatter):
        if ref is not None:
            (ax.axvline if ax is hist else ax.axhline)(ref, color="red", linestyle="--", linewidth=1,
                                                       label="attack budget (L2)")
    hist.set(xlabel="margin along R_init (L2)", ylabel="samples", title="directional margin")
    hist.legend(fontsize=8)
    scatter.scatter(values["standard"], values["robust"], s=8, alpha=0.6)
    scatter.plot([0, cap], [0, cap], color="gray", linewidth=1)
    scatter.set(xlabel="standard model margin", ylabel="robust model margin", title="margin: robust vs standard")
    return _save(fig, path, {"max_alpha": cap, "reference": ref, "margins": values,
                             "medians": {k: analysis[k]["median"] for k in values}})


def _median_text(value) -> str:
    return "inf" if value is None or (isinstance(value, float) and math.isinf(value)) else f"{value:.3g}"
