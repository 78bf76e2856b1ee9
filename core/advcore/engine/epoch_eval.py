"""The per-epoch held-out evaluation (clean and PGD accuracy, EMA, the selection subset) and the score that picks the best checkpoint."""

from __future__ import annotations

from typing import Any
import torch
from ..attacks import model_mode, pgd_eval
from ..data.datasets import held_out_indices
from ..runtime.ema import ema_of
from ..kernel.run import Run
from ..progress import progress_bar

__all__ = ['evaluate', 'evaluate_run', 'epoch_eval_sizes', 'evaluate_epoch', 'selection_score']


def evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *, eps: float, step_size: float,
             steps: int, restarts: int = 1, batch_size: int = 256, device: torch.device | str = "cpu",
             norm: str = "Linf", progress: str | None = None) -> dict[str, float]:
    """Clean and PGD accuracy of ``model`` (eval mode) on uint8 or float images, in the ``norm`` ball.

    ``progress`` names a progress bar over the batches (shown on an interactive stderr only)."""
    correct = robust = 0
    starts = range(0, labels.shape[0], batch_size)
    with model_mode(model, "eval"):
        for start in starts if progress is None else progress_bar(starts, len(starts), progress):
            x = images[start:start + batch_size].to(device)
            x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
            y = labels[start:start + batch_size].to(device)
            with torch.no_grad():
                correct += (model(x).argmax(1) == y).sum().item()
            adv = pgd_eval(model, x, y, eps=eps, step_size=step_size, steps=steps, restarts=restarts, norm=norm)
            with torch.no_grad():
                robust += (model(adv).argmax(1) == y).sum().item()
    n = max(labels.shape[0], 1)
    return {"clean_acc": correct / n, "robust_acc": robust / n}


def evaluate_run(run: Run, model: torch.nn.Module | None = None, n: int | None = None,
                 progress: str | None = None) -> dict[str, float]:
    """Clean and PGD accuracy on the first ``n`` (default ``eval.n``) held-out test samples
    (``progress``: the name of a progress bar, on the main process only)."""
    c = run.config
    n = min(c.eval.n if n is None else n, c.eval.n, len(run.test_set))
    idx = held_out_indices(len(run.test_set), n, run.config.seed)
    model = run.model if model is None else model
    return evaluate(model, run.test_set.images[idx], run.test_set.labels[idx], eps=run.eps,
                    step_size=run.eps / 4, steps=c.eval.pgd_steps, restarts=c.eval.restarts,
                    batch_size=c.data.eval_batch_size, device=run.device, norm=run.norm,
                    progress=progress if run.is_main() else None)


def epoch_eval_sizes(run: Run) -> tuple[int, int]:
    """(samples of an intermediate epoch's evaluation, samples of the final one).

    A short run on the CPU spent a third of each epoch evaluating 500 samples with PGD-20;
    the other epochs now look at the first ``eval.epoch_n`` of those samples (the same
    attack), and only the last epoch pays for all of ``eval.n``. The smaller set is a subset
    of the larger (``held_out_indices`` takes a prefix of one permutation).
    """
    full = min(run.config.eval.n, len(run.test_set))
    small = run.config.eval.epoch_n
    return (full if small is None else min(small, full)), full


def evaluate_epoch(run: Run, final: bool) -> dict[str, Any]:
    """The evaluation after one epoch: ``eval_n`` samples, their accuracies, and (at the end,
    when the sets differ) ``select_robust_acc`` on the per-epoch subset, so the best
    checkpoint is chosen on the same samples in every epoch."""
    small, full = epoch_eval_sizes(run)
    models = [("", run.model)] + ([("ema_", ema_of(run).module)] if ema_of(run) is not None else [])
    out: dict[str, Any] = {"eval_n": full if final else small}
    name = f"eval epoch {run.epoch + 1}"
    for prefix, model in models:
        bar = name + (" (ema)" if prefix else "")
        out.update({f"{prefix}{k}": v for k, v in evaluate_run(run, model, full if final else small, bar).items()})
    if final and small < full:
        out["select_robust_acc"] = evaluate_run(run, run.model, small, name + " (selection)")["robust_acc"]
    return out


def selection_score(metrics: dict[str, Any]) -> float:
    """What picks the best checkpoint: robust accuracy on the per-epoch evaluation set."""
    return metrics.get("select_robust_acc", metrics.get("robust_acc", -1.0))
