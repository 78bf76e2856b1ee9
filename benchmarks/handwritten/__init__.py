"""Hand-written training steps with the same math as each advcore plugin's default options.

Written from the papers' formulas and docs/methods (not by calling the plugins), in the plain
style of the authors' scripts: scalar budgets where the method has them, no hooks, no
records; one file per method family. ``LOOPS[method](ctx)`` returns ``step(x, y, index)``
that runs one update of ``ctx.model`` with ``ctx.opt``; an adversary is
``adversary(x, index, loss_of)`` (PGD-K or ATTA's cache) and maximises ``loss_of(logits)``.
``ctx.forward`` is the model's forward with the benchmark's speed option applied
(channels-last inputs, bf16 autocast, a compiled module) so that an option is compared like
for like. ``tests/test_benchmark_loops.py`` checks each against advcore, weight for weight.
"""

from __future__ import annotations

from functools import partial

from .atta import AttaCache
from .common import Context
from .free import make_free
from .iaat import make_iaat
from .pgd_at import make_pgd_at
from .raat import make_raat
from .trades import hat_loss, kl_method, pgd_kl, trades_loss

__all__ = ["LOOPS", "Context"]

LOOPS = {"pgd-at": make_pgd_at, "raat": make_raat, "iaat": make_iaat, "free": make_free,
         "trades": lambda ctx: kl_method(ctx, trades_loss(ctx), partial(pgd_kl, ctx)),
         "hat": lambda ctx: kl_method(ctx, hat_loss(ctx), partial(pgd_kl, ctx)),
         "fast-atta": lambda ctx: make_pgd_at(ctx, AttaCache(ctx)),
         "trades+fast-atta": lambda ctx: kl_method(ctx, trades_loss(ctx), AttaCache(ctx)),
         "hat+fast-atta": lambda ctx: kl_method(ctx, hat_loss(ctx), AttaCache(ctx))}
