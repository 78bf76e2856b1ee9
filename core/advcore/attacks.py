"""Attack primitives for the Linf and L2 threat models, shared by adversary plugins and evaluation.

Budgets are per-sample tensors [B]; inputs live in [0, 1]. Gradients are taken with
respect to the input only, so no parameter gradient is computed or accumulated. ``norm``
is ``"Linf"`` (the default, and the fast path) or ``"L2"``: the ball ``||x' - x|| <= eps_i``
that ``project`` enforces, ``step_direction`` climbs and ``random_start`` samples.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import torch
import torch.nn.functional as F

__all__ = ["NORMS", "model_mode", "set_mode", "as_budget", "flat_norm", "step_direction", "random_start", "project",
           "input_gradient", "pgd", "ce_loss", "cw_loss", "pgd_eval", "AttackStep", "StepCallback",
           "chain_callbacks"]

NORMS = ("Linf", "L2")
"""The threat models: ``attack.norm`` of a run, ``--norm`` of ``advcore eval``."""

LossFn = Callable[[torch.Tensor, Any], torch.Tensor]


@dataclass
class AttackStep:
    """One PGD iteration as a step callback sees it: before the iterate moves.

    ``x_adv`` is the current iterate and ``logits`` the (detached) output of the forward
    that also gave this step's gradient, so looking costs no extra forward. ``active`` [B]
    marks the samples still stepping; a stopped sample keeps its iterate as the output.
    ``labels`` are the true labels when the attack knows them (``correct`` needs them).
    """

    index: int
    """The iteration, 0-based (before the iterate moves)."""
    steps: int
    """K, the attack's number of iterations."""
    x_adv: torch.Tensor
    """The current iterate [B, C, H, W]."""
    logits: torch.Tensor
    """Detached logits of ``x_adv`` from the forward that gave this step's gradient."""
    active: torch.Tensor
    """Bool [B]: samples still stepping."""
    labels: Optional[torch.Tensor] = None
    """True labels [B] when the attack knows them (None otherwise)."""
    _correct: Optional[torch.Tensor] = field(default=None, repr=False)

    @property
    def correct(self) -> torch.Tensor:
        """Whether each iterate is classified as its label ([B] bool), computed once per step."""
        if self._correct is None:
            if self.labels is None:
                raise ValueError("this attack was not given labels; pass labels=step.y to advcore.attacks.pgd")
            self._correct = self.logits.argmax(1) == self.labels
        return self._correct


StepCallback = Callable[[AttackStep], Optional[torch.Tensor]]
"""Called once per PGD iteration; returns a bool [B] of samples to stop now, or None."""


def chain_callbacks(*callbacks: Optional[StepCallback]) -> Optional[StepCallback]:
    """One callback that calls each given one (Nones skipped) and stops what any of them stops.

    Every callback sees the same ``AttackStep`` (the same ``active`` mask), so the order of
    the callbacks does not matter. Returns None when none is given: the attack's plain path.
    """
    present = [c for c in callbacks if c is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]

    def chained(view: AttackStep) -> Optional[torch.Tensor]:
        stop = None
        for callback in present:
            s = callback(view)
            if s is not None:
                stop = s if stop is None else stop | s
        return stop

    return chained


@contextmanager
def model_mode(model: torch.nn.Module, mode: str) -> Iterator[None]:
    """Run a block with the model in "train" or "eval" mode, then restore the old mode."""
    was_training = model.training
    set_mode(model, mode == "train")
    try:
        yield
    finally:
        set_mode(model, was_training)


_MODULE_TRAIN = torch.nn.Module.train


def set_mode(model: torch.nn.Module, training: bool) -> None:
    """``model.train(training)`` with less Python: a step switches modes two or three times.

    ``Module.train()`` recurses through ``children()`` and sets each flag through
    ``Module.__setattr__`` (about 50 us for a 13-module CNN here, 4x that for a ResNet-18).
    When no submodule overrides ``train`` (DDP, compiled wrappers and BN-freezing modules
    do, and then get the real call) the same flags are written directly; a model already
    in that mode is left alone.
    """
    modules = _submodules(model)
    if all(m.training == training for m in modules):
        return
    if any(type(m).train is not _MODULE_TRAIN for m in modules):
        model.train(training)
        return
    for m in modules:
        object.__setattr__(m, "training", training)


def _submodules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """``list(model.modules())`` without its name strings: a breadth-first walk, each module once."""
    found, seen, i = [model], {id(model)}, 0
    while i < len(found):
        for child in found[i]._modules.values():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                found.append(child)
        i += 1
    return found


def as_budget(value: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-sample budget broadcastable against ``x`` ([B, 1, 1, 1])."""
    if not isinstance(value, torch.Tensor):
        value = torch.full((x.shape[0],), float(value), device=x.device)
    return value.to(device=x.device, dtype=x.dtype).view(-1, *([1] * (x.dim() - 1)))


def flat_norm(v: torch.Tensor, p: float = 2) -> torch.Tensor:
    """Each sample's Lp norm, shaped [B, 1, 1, 1] to broadcast against ``v``."""
    return v.flatten(1).norm(p=p, dim=1).view(-1, *([1] * (v.dim() - 1)))


def step_direction(grad: torch.Tensor, norm: str = "Linf") -> torch.Tensor:
    """The steepest-ascent step of unit norm: sign(g) for Linf, g / ||g||_2 per sample for L2.

    A zero gradient gives a zero L2 step (the norm is floored at 1e-12), not NaN.
    """
    if norm == "Linf":
        return grad.sign()
    return grad / flat_norm(grad, 2).clamp_min(1e-12)


def random_start(x: torch.Tensor, eps: torch.Tensor, init: str, norm: str = "Linf") -> torch.Tensor:
    """The attack's first iterate.

    ``uniform``: Madry's start, clipped to [0, 1]: U[-eps, eps] per pixel for Linf; for L2 a
    uniformly random direction (a normalised Gaussian) scaled by a radius drawn uniformly
    from [0, eps_i], the start the evaluation attacks use. (Uniform over the ball's volume
    would put almost every start on the sphere in image dimensions.) ``normal``: TRADES'
    x + 0.001 N(0, 1), unclipped, for either norm. Anything else: x itself.
    """
    if init == "uniform":
        e = as_budget(eps, x)
        if norm == "Linf":
            return (x + (torch.rand_like(x) * 2 - 1) * e).clamp(0, 1)
        direction = torch.randn_like(x)
        direction = direction / flat_norm(direction, 2).clamp_min(1e-12)
        radius = torch.rand(e.shape, device=x.device, dtype=x.dtype) * e
        return (x + direction * radius).clamp(0, 1)
    if init == "normal":
        return x + 0.001 * torch.randn_like(x)
    return x.clone()


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: torch.Tensor, norm: str = "Linf") -> torch.Tensor:
    """Project onto the per-sample ball around ``x``, then clamp to [0, 1].

    Linf: clip each pixel of x_adv - x to [-eps_i, eps_i]. L2: rescale x_adv - x to norm
    eps_i when it is longer (shorter ones are kept). Clamping to [0, 1] afterwards only
    moves pixels towards x (which is inside the box), so the result stays in the ball.
    """
    e = as_budget(eps, x)
    if norm == "Linf":
        return torch.max(torch.min(x_adv, x + e), x - e).clamp(0, 1)
    delta = x_adv - x
    delta = delta * (e / flat_norm(delta, 2).clamp_min(1e-12)).clamp(max=1.0)
    return (x + delta).clamp(0, 1)


def input_gradient(model: torch.nn.Module, x_adv: torch.Tensor, target: Any, loss_fn: LossFn) -> tuple[torch.Tensor, torch.Tensor]:
    """(d sum_i loss_i / d x_adv, logits) without touching parameter gradients."""
    x_adv = x_adv.detach().requires_grad_(True)
    logits = model(x_adv)
    loss = loss_fn(logits, target).sum()
    (grad,) = torch.autograd.grad(loss, x_adv)
    return grad, logits.detach()


def pgd(model: torch.nn.Module, x: torch.Tensor, target: Any, loss_fn: LossFn, *, eps: torch.Tensor,
        step_size: torch.Tensor, steps: int, init: str = "uniform", norm: str = "Linf",
        on_step: Optional[StepCallback] = None, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
    """K steepest-ascent steps (signed for Linf, normalised for L2), each projected to the per-sample budget.

    Linf: the projection's bounds max(x - eps, 0) and min(x + eps, 1) are computed once: one
    clamp per step gives exactly ``project``'s result (the two intervals share x).

    ``on_step`` opens the loop: it is called before each of the K steps with an
    ``AttackStep`` and may return a bool [B] of samples to stop (their current iterate is
    their output). ``labels`` (default: ``target`` when it is a label vector) let it ask
    which iterates are still correct. Without ``on_step`` the loop is the plain one: no
    extra forward, no host sync, no per-step Python beyond the step itself.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    alpha = as_budget(step_size, x)
    x_adv = random_start(x, eps, init, norm)
    if steps == 0:
        return project(x_adv, x, eps, norm).detach()
    if on_step is not None:
        if labels is None and isinstance(target, torch.Tensor) and target.dim() == 1 and not target.is_floating_point():
            labels = target
        return _pgd_open(model, x, x_adv, target, loss_fn, eps, alpha, steps, norm, on_step, labels)
    if norm == "L2":
        for _ in range(steps):
            grad, _ = input_gradient(model, x_adv, target, loss_fn)
            x_adv = project(x_adv.detach() + alpha * step_direction(grad, "L2"), x, eps, "L2")
        return x_adv
    e = as_budget(eps, x)
    lo, hi = (x - e).clamp_(min=0), (x + e).clamp_(max=1)
    for _ in range(steps):
        grad, _ = input_gradient(model, x_adv, target, loss_fn)
        x_adv = (x_adv.detach() + alpha * grad.sign_()).clamp_(lo, hi)
    return x_adv


def _pgd_open(model, x, x_adv, target, loss_fn, eps, alpha, steps, norm, on_step, labels) -> torch.Tensor:
    """PGD with a step callback: stopped samples keep their iterate (masked, so no host sync).

    Stopped samples are projected once more, so one stopped at its (unclipped) start is
    still inside the ball and [0, 1]; the others are returned exactly as the plain loop would.
    """
    active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    shape = (-1,) + (1,) * (x.dim() - 1)
    if norm == "Linf":
        e = as_budget(eps, x)
        lo, hi = (x - e).clamp_(min=0), (x + e).clamp_(max=1)
    for i in range(steps):
        grad, logits = input_gradient(model, x_adv, target, loss_fn)
        stop = on_step(AttackStep(i, steps, x_adv, logits, active, labels))
        if stop is not None:
            if not isinstance(stop, torch.Tensor) or stop.shape != active.shape or stop.dtype != torch.bool:
                got = (f"a {stop.dtype} tensor shaped {tuple(stop.shape)}" if isinstance(stop, torch.Tensor)
                       else type(stop).__name__)
                raise TypeError(f"a PGD step callback returned {got}; expected a bool tensor shaped "
                                f"{tuple(active.shape)} or None")
            active = active & ~stop
        if norm == "Linf":
            moved = (x_adv.detach() + alpha * grad.sign_()).clamp_(lo, hi)
        else:
            moved = project(x_adv.detach() + alpha * step_direction(grad, "L2"), x, eps, "L2")
        x_adv = torch.where(active.view(shape), moved, x_adv)
    return torch.where(active.view(shape), x_adv, project(x_adv, x, eps, norm)).detach()


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy [B]: the inner loss of PGD-AT and the evaluation's PGD."""
    return F.cross_entropy(logits, y, reduction="none")


def cw_loss(logits: torch.Tensor, y: torch.Tensor, kappa: float = 50.0) -> torch.Tensor:
    """Carlini-Wagner margin: best wrong logit minus the true logit (clamped at -kappa)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    wrong = logits.clone()
    wrong.scatter_(1, y[:, None], float("-inf"))
    return (wrong.max(dim=1).values - true).clamp(min=-kappa)


def pgd_eval(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step_size: float,
             steps: int, restarts: int = 1, loss: str = "ce", norm: str = "Linf",
             on_step: Optional[StepCallback] = None) -> torch.Tensor:
    """Evaluation PGD with restarts: a sample counts as broken if any restart breaks it.

    Returns the adversarial batch (for broken samples, the first breaking restart's example).
    ``on_step`` is passed to each restart's ``pgd`` (its rows are that restart's survivors).
    """
    loss_fn = cw_loss if loss == "cw" else ce_loss
    e = torch.full((x.shape[0],), float(eps), device=x.device)
    a = torch.full_like(e, float(step_size))
    best = x.clone()
    alive = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    for _ in range(restarts):
        if not alive.any():
            break
        idx = alive.nonzero().squeeze(1)
        adv = pgd(model, x[idx], y[idx], loss_fn, eps=e[idx], step_size=a[idx], steps=steps, init="uniform",
                  norm=norm, on_step=on_step, labels=None if on_step is None else y[idx])
        with torch.no_grad():
            broken = model(adv).argmax(1) != y[idx]
        best[idx] = adv
        alive[idx[broken]] = False
    return best
