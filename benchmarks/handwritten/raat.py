"""RAAT: reduced examples at the boundary and DICAR's JS term on mixed adversarial pairs; with
MART's loss in place of the CE it is RAAT++ (``--plugin raat --plugin mart``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import Context, pgd_ce, update
from .margin import mart_terms


def js(p, q):
    m = (0.5 * (p + q)).clamp_min(1e-8)
    return 0.5 * ((p * (p.clamp_min(1e-30).log() - m.log())).sum(1) + (q * (q.clamp_min(1e-30).log() - m.log())).sum(1))


def make_raat(ctx: Context, eta: float = 0.1, lam: float = 1.0, gamma: float = 0.75, temperature: float = 0.5,
              mart_beta: float | None = None):
    """RAAT (code defaults) on two views: x'' = x + eta (x' - x) for boundary rows, DICAR JS on mixed views.
    With ``mart_beta`` (RAAT++): MART's attack start (x + 0.001 N(0, 1)) and MART's loss, its boosted CE
    on the rebuilt rows and its KL on the adversary's own x'."""
    beta = torch.distributions.Beta(torch.tensor(gamma), torch.tensor(gamma))

    def step(x, y, index):
        b = x.shape[0]
        x2, y2 = torch.cat([x, x]), torch.cat([y, y])  # two views; the benchmark does not augment
        ctx.model.eval()
        x_adv = pgd_ce(ctx, x2, y2, ctx.eps, ctx.alpha, ctx.steps, start="uniform" if mart_beta is None else "normal")
        x_red = x2 + eta * (x_adv - x2)
        with torch.no_grad():
            correct = ctx.forward(x2).argmax(1) == y2
            boundary = correct & (ctx.forward(x_red).argmax(1) != y2) & (ctx.forward(x_adv).argmax(1) != y2)
        train_on = torch.where(boundary.view(-1, 1, 1, 1), x_red, x_adv)
        ctx.model.train()
        logits = ctx.forward(train_on)
        pairs = (correct[:b] & correct[b:]).nonzero().squeeze(1)
        z = ctx.forward(x2) if pairs.numel() or mart_beta is not None else None
        if mart_beta is None:
            loss = F.cross_entropy(logits, y2)
        else:
            logits_attack = ctx.forward(x_adv) if boundary.any() else logits
            loss = mart_terms(logits, logits_attack, z, y2, mart_beta)
        if pairs.numel():
            lam_ = beta.sample()
            w = torch.maximum(lam_, 1 - lam_).to(x.device)
            mixed = w * x_adv[pairs] + (1 - w) * x_adv[pairs + b]
            p_mix = F.softmax(ctx.forward(mixed) / temperature, 1)
            p_clean = F.softmax((w * z[pairs] + (1 - w) * z[pairs + b]) / temperature, 1)
            loss = loss + lam * js(p_mix, p_clean).mean()
        update(ctx, loss)
    return step
