"""Liu et al., hard adversarial instances: true-label reweighting and moving-average adaptive
targets (Sec. 6.1, Alg. 1), and the per-sample loss history behind instance difficulty (Eq. 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import Context, state_of, update
from .pgd_at import ce_examples


class AdaptiveTargets:
    """t_i <- rho t_i + (1 - rho) softmax(f(x'_i)) (t_i = onehot(y_i) at the first visit after the
    warm-up); the training target is beta onehot(y) + (1 - beta) t. Kept per dataset index."""

    def __init__(self, ctx: Context, rho: float = 0.9, beta: float = 0.1, warmup: int = 5):
        self.ctx, self.rho, self.beta, self.warmup = ctx, rho, beta, warmup
        self.target: torch.Tensor | None = None  # [N, K], made at the first call
        self.started = torch.zeros(ctx.num_samples, dtype=torch.bool, device=ctx.device)

    def state(self) -> dict:
        return {} if self.target is None else {"adaptive-targets.target": self.target,
                                               "adaptive-targets.started": self.started}

    def __call__(self, logits, y, index):
        if self.ctx.epoch < self.warmup:  # one-hot targets, the state untouched
            return y
        k = logits.shape[1]
        onehot = F.one_hot(y, k).float()
        if self.target is None:
            self.target = torch.zeros(self.ctx.num_samples, k, device=logits.device)
        old = torch.where(self.started[index, None], self.target[index], onehot)
        t = self.rho * old + (1 - self.rho) * F.softmax(logits.detach(), 1)
        self.target[index], self.started[index] = t, True
        return self.beta * onehot + (1 - self.beta) * t


def true_label_weights(logits, y):
    """p_y(x') detached, normalised over the batch: hard instances count less."""
    p = F.softmax(logits.detach(), 1).gather(1, y[:, None]).squeeze(1)
    return p / p.sum()


def make_hard_instances(ctx: Context, adversary=None, reweight: bool = False, adaptive: bool = False,
                        warmup: int = 5):
    """PGD-AT (or ``adversary``'s examples) with reweighting and/or adaptive targets, each after its
    ``warmup`` (5 epochs for both): sum_i w_i CE(f(x'_i), T_i) / sum_i w_i, one train forward."""
    targets = AdaptiveTargets(ctx, warmup=warmup) if adaptive else None

    def step(x, y, index):
        x_adv = ce_examples(ctx, x, y, index, adversary)
        ctx.model.train()
        logits = ctx.forward(x_adv)
        target = y if targets is None else targets(logits, y, index)
        if target.dim() == 1:
            ce = F.cross_entropy(logits, target, reduction="none")
        else:  # CE against the soft target
            ce = -(target * F.log_softmax(logits, 1)).sum(1)
        if reweight and ctx.epoch >= warmup:
            w = true_label_weights(logits, y)
            update(ctx, (w * ce).sum() / w.sum())
        else:
            update(ctx, ce.mean())
    step.state = lambda: state_of(adversary, targets)
    return step


class LossHistory:
    """The ``difficulty`` record: per dataset index and epoch, the summed CE of the trained-on
    example (from the update's own forward, before the step), the number of visits and the label."""

    def __init__(self, ctx: Context, epochs: int = 1):
        self.loss_sum = torch.zeros(ctx.num_samples, epochs, device=ctx.device)
        self.visits = torch.zeros(ctx.num_samples, epochs, dtype=torch.int32, device=ctx.device)
        self.label = torch.full((ctx.num_samples,), -1, dtype=torch.int64, device=ctx.device)

    def state(self) -> dict:
        return {"difficulty.loss_sum": self.loss_sum, "difficulty.visits": self.visits, "difficulty.label": self.label}

    def add(self, index, epoch, losses, y):
        self.loss_sum[index, epoch] += losses
        self.visits[index, epoch] += 1
        self.label[index] = y


def make_difficulty(ctx: Context, epochs: int = 1):
    """PGD-AT, recording each sample's training CE for d(x) (the benchmark's run has one epoch)."""
    history = LossHistory(ctx, epochs)

    def step(x, y, index):
        x_adv = ce_examples(ctx, x, y, index)
        ctx.model.train()
        logits = ctx.forward(x_adv)
        ce = F.cross_entropy(logits, y, reduction="none")
        update(ctx, ce.mean())
        history.add(index, ctx.epoch, ce.detach(), y)
    step.state = lambda: state_of(history)
    return step
