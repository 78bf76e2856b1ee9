"""Hand-written training steps with the same math as each advcore plugin's default options.

Written from the papers' formulas and docs/methods (not by calling the plugins), in the plain
style of the authors' scripts: scalar budgets where the method has them, no hooks, no
records; one file per method family. ``LOOPS[method](ctx)`` returns ``step(x, y, index)``
that runs one update of ``ctx.model`` with ``ctx.opt``; an adversary is
``adversary(x, y, index, loss_of)`` (PGD-K, ATTA's cache, FGSM-RS, FAT's early-stopped PGD) and
maximises ``loss_of(logits)``; ``apply(loss_at)`` takes an update (AWP's at perturbed weights).
``ctx.epoch`` is the epoch the steps belong to: plugins with a warm-up (reweight,
adaptive-targets: 5 epochs) are timed and checked after it, as advcore runs them.
``ctx.forward`` is the model's forward with the benchmark's speed option applied
(channels-last inputs, bf16 autocast, a compiled module) so that an option is compared like
for like. ``tests/test_benchmark_loops.py`` checks each against advcore, weight for weight.
"""

from __future__ import annotations

from functools import partial

from .atta import AttaCache
from .awp import WeightPerturbation
from .common import Context
from .cons_at import make_cons_at
from .early_stop import LookingPGD, make_gair_trades, make_gairat
from .fgsm import fgsm_rs
from .free import make_free
from .hard_instances import make_difficulty, make_hard_instances
from .he import make_he
from .iaat import make_iaat
from .margin import make_alp, make_mart
from .pgd_at import make_pgd_at
from .raat import make_raat
from .standard import make_standard
from .trades import hat_loss, kl_method, pgd_kl, trades_loss

__all__ = ["LOOPS", "Context"]

LOOPS = {"standard": make_standard, "pgd-at": make_pgd_at, "raat": make_raat, "iaat": make_iaat, "free": make_free,
         "trades": lambda ctx: kl_method(ctx, trades_loss(ctx), partial(pgd_kl, ctx)),
         "hat": lambda ctx: kl_method(ctx, hat_loss(ctx), partial(pgd_kl, ctx)),
         "fast-atta": lambda ctx: make_pgd_at(ctx, AttaCache(ctx)),
         "trades+fast-atta": lambda ctx: kl_method(ctx, trades_loss(ctx), AttaCache(ctx)),
         "hat+fast-atta": lambda ctx: kl_method(ctx, hat_loss(ctx), AttaCache(ctx)),
         "mart": make_mart, "alp": make_alp, "cons-at": make_cons_at, "he": make_he,
         "fgsm-rs": lambda ctx: make_pgd_at(ctx, fgsm_rs(ctx)),
         "awp": lambda ctx: make_pgd_at(ctx, apply=WeightPerturbation(ctx)),
         "fat": lambda ctx: make_pgd_at(ctx, LookingPGD(ctx, "uniform", tau=0)),
         "gairat": make_gairat,
         "reweight": lambda ctx: make_hard_instances(ctx, reweight=True),
         "adaptive-targets": lambda ctx: make_hard_instances(ctx, adaptive=True),
         "difficulty": make_difficulty,
         "raat+mart": lambda ctx: make_raat(ctx, mart_beta=6.0),
         "hat+awp": lambda ctx: kl_method(ctx, hat_loss(ctx), partial(pgd_kl, ctx), WeightPerturbation(ctx)),
         "hat+fat": lambda ctx: kl_method(ctx, hat_loss(ctx), LookingPGD(ctx, "normal", tau=0)),
         "trades+gairat": make_gair_trades,
         "fast-atta+reweight+adaptive-targets":
             lambda ctx: make_hard_instances(ctx, AttaCache(ctx), reweight=True, adaptive=True)}
