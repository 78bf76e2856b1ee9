"""One epoch's running training metrics, the metrics.jsonl history and the per-epoch log line."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from ..kernel.step import Step


__all__ = ['EpochTotals']


@dataclass
class EpochTotals:
    """Running sums of one epoch, saved with a mid-epoch checkpoint."""

    loss_sum: float = 0.0
    count: int = 0
    records: dict = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, step: Step) -> None:
        if step.loss_value is not None:
            self.loss_sum += step.loss_value * step.size
        self.count += step.size
        for name, (value, how) in step.records.items():  # tensors stay where they are: no host sync per step
            total, k, _ = self.records.get(name, (0.0, 0, how))
            self.records[name] = (total + value, k + 1, how)

    def running_loss(self) -> float:
        """The mean train loss of the epoch so far (what the training bar shows)."""
        return self.loss_sum / max(self.count, 1)

    def metrics(self) -> dict[str, float]:
        out = {"train_loss": self.running_loss()}
        for name, (total, k, how) in self.records.items():
            out[name] = float(total) if how == "sum" else float(total) / k
        return out

    def state(self) -> dict[str, Any]:
        """The totals as plain numbers, for a mid-epoch checkpoint (``EpochTotals(**state)`` restores them)."""
        records = {name: (float(total), k, how) for name, (total, k, how) in self.records.items()}
        return {**self.__dict__, "records": records}


def _quiet(*args: Any, **kwargs: Any) -> None:
    """The log of ranks other than 0."""


def _read_metrics(out: Path, upto: int) -> list[dict[str, Any]]:
    """The metrics of epochs before ``upto``; later lines (from an interrupted epoch) are dropped."""
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    kept = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kept = [m for m in kept if m["epoch"] <= upto]
    path.write_text("".join(json.dumps(m) + "\n" for m in kept))
    return kept


def _summary(m: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {m['epoch']}/{epochs}", f"loss {m['train_loss']:.4f}"]
    if "clean_acc" in m:
        parts += [f"clean {m['clean_acc']:.2%}", f"robust {m['robust_acc']:.2%}"]
    parts.append(f"{m['seconds']:.1f}s" + (f" (eval {m['eval_seconds']:.1f}s, n={m['eval_n']})" if "eval_seconds" in m else ""))
    return "  ".join(parts)
