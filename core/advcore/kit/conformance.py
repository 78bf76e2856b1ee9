"""The observer behind ``advcore.testing.check_plugin``: a plugin that checks every hook's contract.

It is registered outermost (``wrapper=True, tryfirst=True``) around every hook, so it sees
each hook's arguments before any plugin runs and its result after all of them ran. It
gives the samples of a batch different budgets, checks what the hooks return and leave in
the ``Step``, and records a trace of their outputs so two runs can be compared hook by hook
(same seed, or resumed from a checkpoint). Problems name the hook whose contract broke and
the enabled plugins that implement it.
"""

from __future__ import annotations

import json
import math
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from ..kernel.hookspecs import CONTRACT, hookimpl
from ..kernel.plugins import PROBE_NAME
from ..kernel.step import AttackObjective, LossTerm

__all__ = ["PROBE", "EPS_FACTORS", "Problem", "Probe", "difference", "first_difference", "implementers",
           "hook_named_in", "snapshot"]

PROBE = PROBE_NAME
EPS_FACTORS = (1.0, 0.5, 0.25, 0.75)
"""Each sample's budget is the run's eps times ``EPS_FACTORS[index % 4]``."""
TOL = 1e-5
_observe = hookimpl(wrapper=True, tryfirst=True)


def _then(check):
    """The observer of the hook named like ``check``: it runs the hook (``Probe.watch`` remembers
    whether it raised), then ``check(self, run, step, result)`` looks at what it returned and left."""
    hook = check.__name__

    @_observe
    def observer(self, run, step):
        with self.watch(hook):
            result = yield
        check(self, run, step, result)
        return result

    observer.__name__, observer.__qualname__, observer.__doc__ = hook, check.__qualname__, check.__doc__
    return observer


@dataclass(frozen=True)
class Problem:
    """One broken contract: which check found it, the hook, the plugins implementing that hook."""

    check: str
    """Which check found it (contracts, determinism, resume, partners, ...)."""
    hook: str
    """The hook whose contract broke."""
    message: str
    """What is wrong and how to fix it."""
    plugins: tuple[str, ...] = ()
    """The enabled plugins that implement that hook."""

    def __str__(self) -> str:
        who = f" (implemented by {', '.join(self.plugins)})" if self.plugins else ""
        return f"[{self.check}] {self.hook}{who}: {self.message}"


def hook_named_in(text: str) -> str | None:
    """The first hook name in an error message (the facade's messages start with it)."""
    match = re.search(r"\badvcore_[a-z_]+", text)
    return match.group(0) if match else None


def snapshot(value: Any) -> Any:
    """A detached copy of tensors inside dicts, lists and LossTerms, for later comparison."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: snapshot(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [snapshot(v) for v in value]
    if isinstance(value, LossTerm):
        return {"name": value.name, "values": snapshot(value.values), "weight": value.weight,
                "mask": snapshot(value.mask)}
    if isinstance(value, AttackObjective):
        return (value.name, value.init, value.mode)
    return value


def difference(a: Any, b: Any, where: str) -> str | None:
    """Where two snapshots differ (None when they agree up to float rounding)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return f"{where} is a tensor in one run only"
        if a.shape != b.shape or a.dtype != b.dtype:
            return f"{where} is {tuple(a.shape)}/{a.dtype} in one run and {tuple(b.shape)}/{b.dtype} in the other"
        if a.is_floating_point():
            same = torch.allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)
        else:
            same = torch.equal(a, b)
        if same:
            return None
        gap = (a.double() - b.double()).abs().max().item()
        return f"{where} differs (largest difference {gap:.3g})"
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{where} has keys {sorted(a)} in one run and {sorted(b)} in the other"
        for key in a:
            found = difference(a[key], b[key], f"{where}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where} has {len(a)} entries in one run and {len(b)} in the other"
        for i, (x, y) in enumerate(zip(a, b)):
            found = difference(x, y, f"{where}[{i}]")
            if found:
                return found
        return None
    if isinstance(a, float) and isinstance(b, float):
        same = math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6) or (math.isnan(a) and math.isnan(b))
        return None if same else f"{where} differs ({a} vs {b})"
    return None if a == b else f"{where} differs ({a!r} vs {b!r})"


def first_difference(a: list[tuple[str, Any]], b: list[tuple[str, Any]]) -> tuple[str, str] | None:
    """(hook, what differs) for the first hook call whose recorded output differs between traces."""
    for (hook_a, snap_a), (hook_b, snap_b) in zip(a, b):
        if hook_a != hook_b:
            return hook_b, f"the hooks ran in another order ({hook_a} in one run, {hook_b} in the other)"
        found = difference(snap_a, snap_b, "its output")
        if found:
            return hook_a, found
    if len(a) != len(b):
        longer = a if len(a) > len(b) else b
        return longer[min(len(a), len(b))][0], f"the hooks ran {len(a)} times in one run and {len(b)} in the other"
    return None


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor shaped {tuple(value.shape)}"
    return type(value).__name__


class Probe:
    """The observing plugin (see the module docstring); ``check`` labels the problems it finds."""

    def __init__(self, vary_eps: bool = True):
        self.vary_eps = vary_eps
        self.check = "contracts"
        self.problems: list[Problem] = []
        self.trace: list[tuple[str, Any]] = []
        self.failed_hook: str | None = None

    # --- bookkeeping ------------------------------------------------------------------

    def problem(self, run, hook: str, message: str) -> None:
        found = Problem(self.check, hook, message, implementers(run, hook))
        if found not in self.problems:
            self.problems.append(found)

    def record(self, hook: str, value: Any) -> None:
        self.trace.append((hook, snapshot(value)))

    @contextmanager
    def watch(self, hook: str) -> Iterator[None]:
        """Remember the innermost hook an exception came out of."""
        try:
            yield
        except Exception:
            if self.failed_hook is None:
                self.failed_hook = hook
            raise

    def check_examples(self, run, step, adv: torch.Tensor, hook: str, what: str) -> None:
        """Inside [0, 1] and inside each sample's own budget ``step.eps``, in the run's norm (Linf or L2)."""
        adv = adv.detach()
        if not torch.isfinite(adv).all():
            self.problem(run, hook, f"{what} contain NaN or inf")
            return
        low, high = adv.min().item(), adv.max().item()
        if low < -TOL or high > 1 + TOL:
            self.problem(run, hook, f"{what} leave the input range [0, 1] (min {low:.4g}, max {high:.4g}); clamp them")
        norm = getattr(run, "norm", "Linf")
        moved = (adv - step.x.detach()).flatten(1).norm(p=float("inf") if norm == "Linf" else 2, dim=1)
        eps = step.eps.detach().to(moved.dtype)
        excess = moved - eps
        if not (excess > TOL).any():
            return
        i = int(excess.argmax())
        if (moved > eps.max() + TOL).any():
            i = int((moved - eps.max()).argmax())
            self.problem(run, hook, f"{what} lie outside the eps-ball: sample {i} moved {moved[i]:.4g} ({norm}) but "
                                    f"its budget step.eps[{i}] is {eps[i]:.4g}; project onto the ball "
                                    f"(advcore.attacks.project(..., norm=run.norm))")
        else:
            self.problem(run, hook, f"{what} ignore the per-sample budget step.eps: sample {i} moved "
                                    f"{moved[i]:.4g} but its budget is {eps[i]:.4g} (the batch's largest is "
                                    f"{eps.max():.4g}); use step.eps [B], not the run's scalar eps")

    # --- lifecycle (the hooks without a check of their own are watched by _pass_through) --

    @_observe
    def advcore_on_epoch_end(self, run, epoch, metrics):
        before = dict(metrics)
        with self.watch("advcore_on_epoch_end"):
            result = yield
        for key in before:
            if key not in metrics or metrics[key] is not before[key] and metrics[key] != before[key]:
                self.problem(run, "advcore_on_epoch_end", f"changed or removed the metric {key!r}; only add new keys")
        for key in metrics.keys() - before.keys():
            try:
                json.dumps(metrics[key])
            except (TypeError, ValueError):
                self.problem(run, "advcore_on_epoch_end", f"metric {key!r} is {_describe(metrics[key])}, which "
                                                          f"metrics.jsonl cannot store; add a float or int")
        self.record("advcore_on_epoch_end", sorted(metrics.keys() - before.keys()))
        return result

    # --- per batch --------------------------------------------------------------------

    @_observe
    def advcore_select_samples(self, run, step):
        if self.vary_eps:
            factors = torch.tensor(EPS_FACTORS, dtype=step.eps.dtype)[step.index.cpu() % len(EPS_FACTORS)]
            step.eps = step.eps * factors.to(step.eps.device)
            step.step_size = step.step_size * factors.to(step.step_size.device)
        with self.watch("advcore_select_samples"):
            result = yield
        for field in ("eps", "step_size"):
            value = getattr(step, field)
            if isinstance(value, torch.Tensor) and value.shape == (step.size,):
                if not torch.isfinite(value).all() or (value < 0).any():
                    self.problem(run, "advcore_select_samples", f"left step.{field} with negative or non-finite values")
        for name, mask in step.groups.items():
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != (step.size,):
                self.problem(run, "advcore_select_samples", f"step.groups[{name!r}] is {_describe(mask)}; "
                                                            f"expected a bool tensor shaped ({step.size},)")
        self.record("advcore_select_samples", {"eps": step.eps, "step_size": step.step_size, "groups": step.groups})
        return result

    @_then
    def advcore_attack_objective(self, run, step, objective):
        if isinstance(objective, AttackObjective):
            if objective.init not in ("uniform", "normal", "none"):
                self.problem(run, "advcore_attack_objective",
                             f"init is {objective.init!r}; use uniform, normal or none")
            if objective.mode not in ("eval", "train"):
                self.problem(run, "advcore_attack_objective", f"mode is {objective.mode!r}; use eval or train")
        self.record("advcore_attack_objective", objective)

    @_observe
    def advcore_generate_adversarial(self, run, step, objective):
        params = list(step.model.parameters())
        grads = [None if p.grad is None else p.grad.clone() for p in params]
        weights = [p.detach().clone() for p in params]
        with self.watch("advcore_generate_adversarial"):
            adv = yield
        hook = "advcore_generate_adversarial"
        if isinstance(adv, torch.Tensor) and adv.shape == step.x.shape:
            self.check_examples(run, step, adv, hook, "the adversarial examples")
        if any((g is None) != (p.grad is None) or (g is not None and not torch.equal(g, p.grad))
               for g, p in zip(grads, params)):
            self.problem(run, hook, "changed the model's parameter gradients; take gradients with respect to the "
                                    "input only (advcore.attacks.input_gradient)")
        if any(not torch.equal(w, p.detach()) for w, p in zip(weights, params)):
            self.problem(run, hook, "changed the model's weights while generating examples")
        self.record(hook, adv)
        return adv

    @_observe
    def advcore_derive_examples(self, run, step):
        attack = step.examples.get("attack")
        attack_copy = attack.detach().clone() if isinstance(attack, torch.Tensor) else None
        with self.watch("advcore_derive_examples"):
            result = yield
        hook, examples = "advcore_derive_examples", step.examples
        if attack_copy is not None and not (isinstance(examples.get("attack"), torch.Tensor)
                                            and torch.equal(examples["attack"].detach(), attack_copy)):
            self.problem(run, hook, "changed examples['attack'], the adversary's output; add derived examples "
                                    "under a new name or replace rows of examples['adv']")
        if not (isinstance(examples.get("clean"), torch.Tensor) and torch.equal(examples["clean"], step.x)):
            self.problem(run, hook, "changed examples['clean']; it must stay the batch itself")
        for name, value in examples.items():
            if not isinstance(value, torch.Tensor) or value.shape != step.x.shape:
                self.problem(run, hook, f"examples[{name!r}] is {_describe(value)}; every example must be shaped "
                                        f"like the batch {tuple(step.x.shape)}")
            elif not torch.isfinite(value.detach()).all():
                self.problem(run, hook, f"examples[{name!r}] contains NaN or inf")
        adv = examples.get("adv")
        if (attack_copy is not None and isinstance(adv, torch.Tensor) and adv.shape == step.x.shape
                and not torch.equal(adv.detach(), attack_copy)):
            self.check_examples(run, step, adv, hook, "examples['adv']")
        self.record(hook, examples)
        return result

    @_then
    def advcore_adapt_targets(self, run, step, result):
        k, b = run.info.num_classes, step.size
        for name, target in step.targets.items():
            bad = None
            if not isinstance(target, torch.Tensor):
                bad = f"is {_describe(target)}"
            elif not target.is_floating_point():
                if target.shape != (b,) or (target < 0).any() or (target >= k).any():
                    bad = f"is {_describe(target)} with values in [{target.min()}, {target.max()}]"
            elif target.shape != (b, k):
                bad = f"is {_describe(target)}"
            elif not torch.isfinite(target).all() or (target < -TOL).any() or \
                    not torch.allclose(target.sum(1), torch.ones_like(target[:, 0]), atol=1e-3):
                bad = "has rows that are not probability distributions (non-negative, summing to 1)"
            if bad:
                self.problem(run, "advcore_adapt_targets", f"step.targets[{name!r}] {bad}; expected labels "
                                                           f"[{b}] in 0..{k - 1} or soft targets [{b}, {k}]")
        self.record("advcore_adapt_targets", step.targets)

    @_then
    def advcore_loss_terms(self, run, step, results):
        hook = "advcore_loss_terms"
        for result in results:
            if result is None:
                continue
            if not isinstance(result, (list, tuple)):
                self.problem(run, hook, f"returned {_describe(result)}; expected a list of LossTerm or None")
                continue
            for term in result:
                if not isinstance(term, LossTerm) or not isinstance(term.values, torch.Tensor) \
                        or term.values.shape != (step.size,):
                    continue  # the facade names this one
                if not torch.isfinite(term.values.detach()).all():
                    self.problem(run, hook, f"term {term.name!r} has NaN or inf values")
                if torch.is_grad_enabled() and not term.values.requires_grad:
                    self.problem(run, hook, f"term {term.name!r} carries no gradient (computed under no_grad or "
                                            f"detached), so it cannot train the model")
                if not isinstance(term.weight, (int, float)) or not math.isfinite(term.weight):
                    self.problem(run, hook, f"term {term.name!r} has weight {term.weight!r}; expected a finite number")
                mask = term.mask
                if mask is not None and (not isinstance(mask, torch.Tensor) or mask.shape != (step.size,)):
                    self.problem(run, hook, f"term {term.name!r} has a mask that is {_describe(term.mask)}; "
                                            f"expected a bool tensor shaped ({step.size},)")
        self.record(hook, [t for r in results if isinstance(r, (list, tuple)) for t in r])

    @_then
    def advcore_adjust_logits(self, run, step, out):
        if isinstance(out, torch.Tensor) and not torch.isfinite(out.detach()).all():
            self.problem(run, "advcore_adjust_logits", "returned logits with NaN or inf")
        self.record("advcore_adjust_logits", out)

    @_then
    def advcore_sample_weights(self, run, step, results):
        for w in results:
            if isinstance(w, torch.Tensor) and w.shape == (step.size,):
                if not torch.isfinite(w).all() or (w < 0).any():
                    self.problem(run, "advcore_sample_weights", "returned negative or non-finite weights")
        self.record("advcore_sample_weights", results)

    @_then
    def advcore_update(self, run, step, loss):
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            self.problem(run, "advcore_update", f"returned {_describe(loss)}; expected the scalar loss")
        elif not torch.isfinite(loss):
            self.problem(run, "advcore_update", f"returned the loss {loss.item()}")
        params = [p.detach() for p in step.model.parameters()]
        if not all(torch.isfinite(p).all() for p in params):
            self.problem(run, "advcore_update", "left non-finite weights in the model")
        self.record("advcore_update", {"loss": loss, "weights": params})

    @_observe
    def advcore_observe_loss(self, run, step):
        loss, terms = step.loss, list(step.terms)
        values = [t.values.detach().clone() for t in terms]
        with self.watch("advcore_observe_loss"):
            result = yield
        if step.loss is not loss or len(step.terms) != len(terms) or any(
                a is not b or not torch.equal(a.values.detach(), v) for a, b, v in zip(step.terms, terms, values)):
            self.problem(run, "advcore_observe_loss", "changed the loss or its terms; an observer only reads them")
        return result

    @_then
    def advcore_after_step(self, run, step, result):
        self.record("advcore_after_step", {name: run.state[name] for name in run.state})


def _pass_through(hook: str):
    """An observer that checks nothing but remembers whether ``hook`` raised (``Probe.watch``).

    It declares no hook arguments (pluggy passes an implementation only those it names).
    """
    @_observe
    def observer(self):
        with self.watch(hook):
            return (yield)

    observer.__name__ = observer.__qualname__ = hook
    return observer


for _contract in CONTRACT:  # every hook is watched: those without a check above get a pass-through
    if _contract.name != "advcore_plugin_info" and _contract.name not in vars(Probe):
        setattr(Probe, _contract.name, _pass_through(_contract.name))


def implementers(run, hook: str) -> tuple[str, ...]:
    """The enabled plugins (not the core, not the probe) that implement ``hook``."""
    caller = getattr(run.hooks.pm.hook, hook, None)
    if caller is None:
        return ()
    names = [i.plugin_name for i in reversed(caller.get_hookimpls())]
    return tuple(n for n in names if n not in (PROBE, "advcore.core"))
