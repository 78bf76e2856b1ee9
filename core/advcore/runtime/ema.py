"""Exponential moving average of the weights (optional, ``--set ema.decay=0.999``).

Averaged weights are often more robust than the last iterate (Gowal et al., 2020; Rebuffi et
al., 2021). After every optimizer step each floating-point tensor of the model's state dict
(parameters and BatchNorm statistics) moves towards the model's:
``avg = d * avg + (1 - d) * w`` with ``d = min(decay, (1 + t) / (10 + t))`` when
``ema.warmup`` is on (t = updates so far), so early averages are not dominated by the random
initialisation. Integer buffers are copied. The average is saved as ``ema.*`` tensors in
every checkpoint, evaluated each epoch (``ema_clean_acc``, ``ema_robust_acc``) and used by
``advcore eval --ema``.
"""

from __future__ import annotations

import torch

__all__ = ["WeightAverage", "STASH_KEY", "ema_of", "update_ema", "ema_tensors", "load_ema"]

STASH_KEY = "advcore.ema"


class WeightAverage:
    """The running average of the weights, kept by ``torch.optim.swa_utils.AveragedModel``.

    AveragedModel holds the copy and walks parameters and buffers (``use_buffers=True``)
    grouped by device and dtype; the average itself is ``_average`` below, so the warm-up
    decay applies and the numbers are those of ``avg.mul_(d).add_(w, alpha=1 - d)``. Its
    count starts at 1 (the copy counts as the first average), so the first update already
    blends with the initial weights, as the formula in the module docstring says.
    """

    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool = True):
        from torch.optim.swa_utils import AveragedModel

        self.decay, self.warmup, self.updates = float(decay), bool(warmup), 0
        self.averaged = AveragedModel(model, multi_avg_fn=self._average, use_buffers=True)
        self.averaged.n_averaged.fill_(1)
        self.module = self.averaged.module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    def _average(self, averaged: list[torch.Tensor], current: list[torch.Tensor], _count: torch.Tensor) -> None:
        """One dtype group; the decay comes from the host counter (no device sync per step)."""
        if not averaged[0].dtype.is_floating_point:  # integer buffers (BatchNorm's counter) are copied
            torch._foreach_copy_(averaged, current)
            return
        d = self.current_decay()
        torch._foreach_mul_(averaged, d)
        torch._foreach_add_(averaged, current, alpha=1 - d)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.averaged.update_parameters(model)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**self.module.state_dict(), "_updates": torch.tensor(self.updates)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        state = dict(state)
        self.updates = int(state.pop("_updates", torch.tensor(0)).item())
        self.module.load_state_dict(state)
        self.averaged.n_averaged.fill_(self.updates + 1)


def ema_of(run) -> WeightAverage | None:
    return run.stash.get(STASH_KEY)


def update_ema(run) -> None:
    """Called by the trainer after each optimizer step."""
    ema = ema_of(run)
    if ema is not None:
        ema.update(run.model)


def ema_tensors(run) -> dict[str, torch.Tensor]:
    """``ema.<key>`` tensors for the checkpoint (none when EMA is off)."""
    ema = ema_of(run)
    return {} if ema is None else {f"ema.{k}": v for k, v in ema.state_dict().items()}


def load_ema(run, tensors: dict[str, torch.Tensor]) -> None:
    """Restore the average on resume; a checkpoint without one starts it from the restored model."""
    ema = ema_of(run)
    if ema is None:
        return
    saved = {k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")}
    if saved:
        ema.load_state_dict(saved)
    else:
        run.stash[STASH_KEY] = WeightAverage(run.model, ema.decay, ema.warmup)
