"""The TRADES family (Zhang et al. 2019; HAT, Rade & Moosavi-Dezfooli 2022): CE + beta KL(clean || adv), HAT's helper term."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import Context, clip, state_of, update


def pgd_kl(ctx: Context, x, y, index, loss_of):
    """TRADES' inner maximisation: K signed steps on ``loss_of(logits)`` from x + 0.001 N(0, 1).
    ``y`` and ``index`` are unused: the KL needs no label and PGD keeps nothing per sample."""
    x_adv = x + 0.001 * torch.randn_like(x)
    for _ in range(ctx.steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_of(ctx.forward(x_adv)), x_adv)
        x_adv = clip(x_adv.detach() + ctx.alpha * grad.sign(), x, ctx.eps)
    return x_adv


def kl_method(ctx: Context, loss, adversary, apply=None):
    """The TRADES family: p(clean) once in eval mode, ``adversary(x, y, index, loss_of)`` maximises
    the KL to it, then ``loss(x, y, x_adv, forward)`` is minimised in train mode. ``apply(loss_at)``
    takes the update (default: one SGD step on ``loss_at(ctx.forward)``; AWP's perturbed one)."""
    apply = apply or (lambda loss_at: update(ctx, loss_at(ctx.forward)))

    def step(x, y, index):
        ctx.model.eval()
        with torch.no_grad():
            p_clean = F.softmax(ctx.forward(x), 1)
        x_adv = adversary(x, y, index, lambda logits: F.kl_div(F.log_softmax(logits, 1), p_clean, reduction="sum"))
        apply(lambda forward: loss(x, y, x_adv, forward))
    step.state = lambda: state_of(adversary)
    return step


def trades_loss(ctx: Context, beta: float = 6.0):
    def loss(x, y, x_adv, forward):
        ctx.model.train()
        logits = forward(x)
        kl = F.kl_div(F.log_softmax(forward(x_adv), 1), F.softmax(logits, 1), reduction="batchmean")
        return F.cross_entropy(logits, y) + beta * kl
    return loss


def hat_loss(ctx: Context, beta: float = 2.5, gamma: float = 0.5, h: float = 2.0):
    """TRADES + gamma * CE(f(x + h r), argmax f_std(x + r)); beta 2.5 off CIFAR-100."""
    trades = trades_loss(ctx, beta)

    def loss(x, y, x_adv, forward):
        with torch.no_grad():
            helper_y = ctx.std(x_adv).argmax(1)
        robust = trades(x, y, x_adv, forward)  # the clean and adversarial forwards, then the helper's
        return robust + gamma * F.cross_entropy(forward(x + h * (x_adv - x)), helper_y)
    return loss
