"""Attacks that look at each PGD iterate: FAT's early-stopped PGD (Zhang et al. 2020) and GAIRAT's
geometry counts kappa with their instance weights (Zhang et al. 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import Context, clip, random_start, state_of, update


class LookingPGD:
    """K signed steps on ``loss_of(logits)`` from the objective's start; before each step the iterate
    is classified (from the forward that gives the gradient). kappa counts the correct ones (GAIRAT);
    with ``tau`` (FAT) a misclassified iterate whose budget is spent stops there, one with budget
    left spends a unit and steps on. Per-sample counts are kept by dataset index."""

    def __init__(self, ctx: Context, start: str = "uniform", tau: int | None = None):
        self.ctx, self.start, self.tau = ctx, start, tau
        self.kappa = torch.zeros(ctx.num_samples, device=ctx.device)  # GAIRAT's gairat.kappa
        self.steps_taken = torch.zeros(ctx.num_samples, device=ctx.device)  # FAT's fat.steps
        self.last_kappa: torch.Tensor | None = None

    def state(self) -> dict:
        return {"gairat.kappa": self.kappa, "fat.steps": self.steps_taken}

    def __call__(self, x, y, index, loss_of):
        ctx = self.ctx
        x_adv = random_start(x, ctx.eps, self.start)
        running = torch.ones_like(y, dtype=torch.bool)
        budget = torch.full_like(y, self.tau or 0)
        kappa = torch.zeros(y.shape, device=x.device)
        taken = torch.zeros(y.shape, device=x.device)
        for _ in range(ctx.steps):
            x_adv.requires_grad_(True)
            logits = ctx.forward(x_adv)
            (grad,) = torch.autograd.grad(loss_of(logits), x_adv)
            correct = logits.argmax(1) == y
            if self.tau is not None:
                wrong = running & ~correct
                stop = wrong & (budget == 0)
                budget = budget - (wrong & ~stop).long()
                running = running & ~stop
            kappa += (correct & running).float()
            taken += running.float()
            moved = clip(x_adv.detach() + ctx.alpha * grad.sign(), x, ctx.eps)
            x_adv = torch.where(running.view(-1, 1, 1, 1), moved, x_adv.detach())
        self.kappa[index], self.steps_taken[index], self.last_kappa = kappa, taken, kappa
        return clip(x_adv, x, ctx.eps)  # a sample stopped at its (Gaussian) start is brought into the box


def gair_weights(kappa, steps: int, lam: float = -1.0):
    """(1 + tanh(lam + 5 (h - kappa) / h)) / 2 with h = K // 2, scaled to sum to the batch size."""
    h = steps // 2
    w = (torch.tanh(lam + 5.0 * (h - kappa) / h) + 1) / 2
    return w * (w.numel() / w.sum())


def weighted_mean(w, values):
    return (w * values).sum() / w.sum()


def make_gairat(ctx: Context, lam: float = -1.0, begin_epoch: int = 0):
    """GAIRAT on PGD-AT: CE attack in eval mode counting kappa, then sum w CE / sum w. advcore's
    ``begin_epoch`` default is half the run, 0 for the benchmark's one-epoch run; before it w = 1."""
    attack = LookingPGD(ctx, "uniform")

    def step(x, y, index):
        ctx.model.eval()
        x_adv = attack(x, y, index, lambda logits: F.cross_entropy(logits, y, reduction="sum"))
        ctx.model.train()
        ce = F.cross_entropy(ctx.forward(x_adv), y, reduction="none")
        if ctx.epoch < begin_epoch:
            update(ctx, ce.mean())
        else:
            update(ctx, weighted_mean(gair_weights(attack.last_kappa, ctx.steps, lam), ce))
    step.state = lambda: state_of(attack)
    return step


def make_gair_trades(ctx: Context, beta: float = 6.0, lam: float = -1.0, begin_epoch: int = 0):
    """TRADES + GAIRAT with its default ``terms`` (every term): both CE(clean) and the KL weighted."""
    attack = LookingPGD(ctx, "normal")

    def step(x, y, index):
        ctx.model.eval()
        with torch.no_grad():
            p_clean = F.softmax(ctx.forward(x), 1)
        x_adv = attack(x, y, index, lambda logits: F.kl_div(F.log_softmax(logits, 1), p_clean, reduction="sum"))
        ctx.model.train()
        logits = ctx.forward(x)
        ce = F.cross_entropy(logits, y, reduction="none")
        kl = F.kl_div(F.log_softmax(ctx.forward(x_adv), 1), F.softmax(logits, 1), reduction="none").sum(1)
        w = torch.ones_like(ce) if ctx.epoch < begin_epoch else gair_weights(attack.last_kappa, ctx.steps, lam)
        update(ctx, weighted_mean(w, ce) + beta * weighted_mean(w, kl))
    step.state = lambda: state_of(attack)
    return step
