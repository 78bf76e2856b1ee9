"""Hand-written training steps with the same math as each advcore plugin's default options.

Written from the papers' formulas and docs/methods (not by calling the plugins), in the plain
style of the authors' scripts: scalar budgets where the method has them, no hooks, no
records. ``LOOPS[method](ctx)`` returns ``step(x, y, index)`` that runs one update of
``ctx.model`` with ``ctx.opt``; an adversary is ``adversary(x, index, loss_of)`` (PGD-K or
ATTA's cache) and maximises ``loss_of(logits)``. ``ctx.forward`` is the model's forward with the benchmark's
speed option applied (channels-last inputs, bf16 autocast, a compiled module) so that an
option is compared like for like.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass
class Context:
    model: torch.nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]
    opt: torch.optim.Optimizer
    eps: float
    alpha: float
    steps: int
    num_samples: int
    image_shape: tuple[int, ...]
    device: torch.device
    std: torch.nn.Module | None = None  # HAT's standard network


def update(ctx: Context, loss: torch.Tensor) -> None:
    ctx.opt.zero_grad(set_to_none=True)
    loss.backward()
    ctx.opt.step()


def clip(x_adv, x, eps):
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)


def pgd_ce(ctx: Context, x, y, eps, alpha, steps):
    """Madry's PGD on CE from a uniform start; ``eps``/``alpha`` floats or [B, 1, 1, 1]."""
    x_adv = (x + (torch.rand_like(x) * 2 - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(ctx.forward(x_adv), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = clip(x_adv.detach() + alpha * grad.sign(), x, eps)
    return x_adv


def pgd_kl(ctx: Context, x, index, loss_of):
    """TRADES' inner maximisation: K signed steps on ``loss_of(logits)`` from x + 0.001 N(0, 1).
    ``index`` is unused: PGD keeps nothing per sample."""
    x_adv = x + 0.001 * torch.randn_like(x)
    for _ in range(ctx.steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_of(ctx.forward(x_adv)), x_adv)
        x_adv = clip(x_adv.detach() + ctx.alpha * grad.sign(), x, ctx.eps)
    return x_adv


class AttaCache:
    """ATTA: per-sample perturbations kept across visits (first visit U[-eps, eps]), no augmentation."""

    def __init__(self, ctx: Context, alpha_ratio: float = 0.5):
        self.ctx, self.alpha = ctx, alpha_ratio * ctx.eps
        self.delta = torch.zeros(ctx.num_samples, *ctx.image_shape, device=ctx.device)
        self.visited = torch.zeros(ctx.num_samples, dtype=torch.bool, device=ctx.device)

    def __call__(self, x, index, loss_of):
        """One signed step on ``loss_of(logits)`` from the cached start, stored back."""
        d = self.delta[index]
        new = ~self.visited[index]
        d[new] = (torch.rand_like(d[new]) * 2 - 1) * self.ctx.eps
        start = (x + d).requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_of(self.ctx.forward(start)), start)
        x_adv = clip(start.detach() + self.alpha * grad.sign(), x, self.ctx.eps)
        self.delta[index] = x_adv - x
        self.visited[index] = True
        return x_adv


def make_pgd_at(ctx: Context, adversary=None):
    """Madry's PGD-AT; with ``adversary`` (an AttaCache) that attack on CE instead of PGD-K."""
    def step(x, y, index):
        ctx.model.eval()
        if adversary is None:
            x_adv = pgd_ce(ctx, x, y, ctx.eps, ctx.alpha, ctx.steps)
        else:
            x_adv = adversary(x, index, lambda logits: F.cross_entropy(logits, y, reduction="sum"))
        ctx.model.train()
        update(ctx, F.cross_entropy(ctx.forward(x_adv), y))
    return step


def kl_method(ctx: Context, loss, adversary):
    """The TRADES family: p(clean) once in eval mode, ``adversary(x, index, loss_of)`` maximises
    the KL to it, then ``loss(x, y, x_adv)`` is minimised in train mode."""
    def step(x, y, index):
        ctx.model.eval()
        with torch.no_grad():
            p_clean = F.softmax(ctx.forward(x), 1)
        x_adv = adversary(x, index, lambda logits: F.kl_div(F.log_softmax(logits, 1), p_clean, reduction="sum"))
        update(ctx, loss(x, y, x_adv))
    return step


def trades_loss(ctx: Context, beta: float = 6.0):
    def loss(x, y, x_adv):
        ctx.model.train()
        logits = ctx.forward(x)
        kl = F.kl_div(F.log_softmax(ctx.forward(x_adv), 1), F.softmax(logits, 1), reduction="batchmean")
        return F.cross_entropy(logits, y) + beta * kl
    return loss


def hat_loss(ctx: Context, beta: float = 2.5, gamma: float = 0.5, h: float = 2.0):
    """TRADES + gamma * CE(f(x + h r), argmax f_std(x + r)); beta 2.5 off CIFAR-100."""
    trades = trades_loss(ctx, beta)

    def loss(x, y, x_adv):
        with torch.no_grad():
            helper_y = ctx.std(x_adv).argmax(1)
        robust = trades(x, y, x_adv)  # the clean and adversarial forwards, then the helper's
        return robust + gamma * F.cross_entropy(ctx.forward(x + h * (x_adv - x)), helper_y)
    return loss


def js(p, q):
    m = (0.5 * (p + q)).clamp_min(1e-8)
    return 0.5 * ((p * (p.clamp_min(1e-30).log() - m.log())).sum(1) + (q * (q.clamp_min(1e-30).log() - m.log())).sum(1))


def make_raat(ctx: Context, eta: float = 0.1, lam: float = 1.0, gamma: float = 0.75, temperature: float = 0.5):
    """RAAT (code defaults) on two views: x'' = x + eta (x' - x) for boundary rows, DICAR JS on mixed views."""
    beta = torch.distributions.Beta(torch.tensor(gamma), torch.tensor(gamma))

    def step(x, y, index):
        b = x.shape[0]
        x2, y2 = torch.cat([x, x]), torch.cat([y, y])  # two views; the benchmark does not augment
        ctx.model.eval()
        x_adv = pgd_ce(ctx, x2, y2, ctx.eps, ctx.alpha, ctx.steps)
        x_red = x2 + eta * (x_adv - x2)
        with torch.no_grad():
            correct = ctx.forward(x2).argmax(1) == y2
            boundary = correct & (ctx.forward(x_red).argmax(1) != y2) & (ctx.forward(x_adv).argmax(1) != y2)
        train_on = torch.where(boundary.view(-1, 1, 1, 1), x_red, x_adv)
        ctx.model.train()
        loss = F.cross_entropy(ctx.forward(train_on), y2)
        pairs = (correct[:b] & correct[b:]).nonzero().squeeze(1)
        if pairs.numel():
            lam_ = beta.sample()
            w = torch.maximum(lam_, 1 - lam_).to(x.device)
            mixed = w * x_adv[pairs] + (1 - w) * x_adv[pairs + b]
            z = ctx.forward(x2)
            p_mix = F.softmax(ctx.forward(mixed) / temperature, 1)
            p_clean = F.softmax((w * z[pairs] + (1 - w) * z[pairs + b]) / temperature, 1)
            loss = loss + lam * js(p_mix, p_clean).mean()
        update(ctx, loss)
    return step


def make_iaat(ctx: Context, gamma: float = 1.9 / 255, beta: float = 0.1, ratio: float = 0.2):
    """IAAT after warm-up (Alg. 2): two search attacks per batch in train mode, smoothed radii,
    clean input for misclassified samples, then the PGD-AT update at the new radii."""
    radius = torch.full((ctx.num_samples,), ctx.eps, device=ctx.device)

    def survives(x, y, eps):
        e = eps.view(-1, 1, 1, 1)
        adv = pgd_ce(ctx, x, y, e, torch.clamp(e * ratio, min=ctx.alpha), ctx.steps)
        with torch.no_grad():
            return ctx.forward(adv).argmax(1) == y

    def step(x, y, index):
        ctx.model.train()
        with torch.no_grad():
            correct = ctx.forward(x).argmax(1) == y
        prev = radius[index]
        up, keep = survives(x, y, prev + gamma), survives(x, y, prev)
        picked = torch.where(up, prev + gamma, torch.where(keep, prev, prev - gamma)).clamp_min(0)
        new = (beta * picked + (1 - beta) * prev).clamp_min(0)
        radius[index] = new
        e = (new * correct).view(-1, 1, 1, 1)
        ctx.model.eval()
        x_adv = pgd_ce(ctx, x, y, e, torch.clamp(e * ratio, min=ctx.alpha), ctx.steps)
        ctx.model.train()
        update(ctx, F.cross_entropy(ctx.forward(x_adv), y))
    return step


LOOPS = {"pgd-at": make_pgd_at, "raat": make_raat, "iaat": make_iaat,
         "trades": lambda ctx: kl_method(ctx, trades_loss(ctx), partial(pgd_kl, ctx)),
         "hat": lambda ctx: kl_method(ctx, hat_loss(ctx), partial(pgd_kl, ctx)),
         "fast-atta": lambda ctx: make_pgd_at(ctx, AttaCache(ctx)),
         "trades+fast-atta": lambda ctx: kl_method(ctx, trades_loss(ctx), AttaCache(ctx)),
         "hat+fast-atta": lambda ctx: kl_method(ctx, hat_loss(ctx), AttaCache(ctx))}
