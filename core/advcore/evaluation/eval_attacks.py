"""Evaluation attacks, each answering one question per sample: does it survive?

PGD-k (CE) with restarts, CW-loss PGD, MIM and FGSM are white-box and written here for both
Linf and L2 balls; Square (black-box) and AutoAttack come from ``pyautoattack``. Every
attack returns boolean robustness flags [N] so results can be combined per sample (the
worst case over attacks, the gradient-masking checks) instead of only as accuracies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from ..attacks import NORMS, ce_loss, cw_loss, flat_norm, model_mode, project, random_start, step_direction
from ..errors import ConfigError
from ..progress import progress_bar  # re-exported: evaluation modules import it from here

__all__ = ["NORMS", "AA_VERSIONS", "AA_ATTACKS", "Attack", "parse_attacks", "predict", "pgd_flags", "square_flags", "attack_flags", "progress_bar"]

AA_VERSIONS = ("standard", "plus", "rand", "custom")
AA_ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
KINDS = ("pgd", "cw", "mim", "fgsm", "square", "autoattack")


@dataclass(frozen=True)
class Attack:
    """One evaluation attack; ``key`` names its accuracy in the results."""

    kind: str
    steps: int = 0
    restarts: int = 1
    queries: int = 0
    version: str = "standard"
    components: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        if self.kind in ("pgd", "cw", "mim"):
            return f"{self.kind}{self.steps}" + (f"_r{self.restarts}" if self.restarts > 1 else "") + "_acc"
        if self.kind == "square":
            return f"square{self.queries}_acc"
        if self.kind == "autoattack":
            return "autoattack_acc" if self.version == "standard" else f"autoattack_{self.version}_acc"
        return f"{self.kind}_acc"


def parse_attacks(names: Iterable[str], *, pgd_steps: int = 20, restarts: int = 1, square_queries: int = 5000,
                  aa_version: str = "standard", aa_attacks: Iterable[str] | None = None) -> list[Attack]:
    """``pgd``, ``pgd-100`` (steps), ``pgd-100x5`` (steps x restarts), ``cw``, ``mim``, ``fgsm``, ``square``, ``square-1000`` (queries), ``autoattack``."""
    if aa_version not in AA_VERSIONS:
        raise ConfigError(f"--aa-version: invalid value {aa_version!r} (allowed: {', '.join(AA_VERSIONS)})")
    components = tuple(aa_attacks or ())
    bad = [a for a in components if a not in AA_ATTACKS]
    if bad:
        raise ConfigError(f"--aa-attack: unknown AutoAttack attack {bad[0]!r} (allowed: {', '.join(AA_ATTACKS)})")
    if aa_version == "custom" and not components:
        raise ConfigError("--aa-version custom needs its attacks: add --aa-attack apgd-ce (repeatable)")
    if components and aa_version != "custom":
        raise ConfigError(f"--aa-attack needs --aa-version custom (version {aa_version!r} fixes its own attacks)")
    if pgd_steps < 1 or restarts < 1:
        raise ConfigError("--pgd-steps and --restarts must be at least 1")
    out = []
    for name in names:
        match = re.fullmatch(r"([a-z]+)(?:-(\d+)(?:x(\d+))?)?", name.strip().lower())
        kind, number, times = (match.group(1), match.group(2), match.group(3)) if match else (name, None, None)
        if (kind not in KINDS or (number is not None and kind in ("fgsm", "autoattack")) or number == "0"
                or (times is not None and (kind not in ("pgd", "cw") or int(times) < 1))):
            raise ConfigError(f"--attack: unknown attack {name!r}; choose from pgd, pgd-K, pgd-KxR (R restarts), "
                              f"cw, cw-K, cw-KxR, mim, mim-K, fgsm, square, square-Q, autoattack")
        n = int(number) if number else None
        if kind in ("pgd", "cw"):
            out.append(Attack(kind, steps=n or pgd_steps, restarts=int(times) if times else restarts))
        elif kind == "mim":
            out.append(Attack(kind, steps=n or pgd_steps))
        elif kind == "square":
            out.append(Attack(kind, queries=n or square_queries))
        elif kind == "autoattack":
            # a custom ensemble may shorten Square; the fixed versions keep AutoAttack's 5000 queries
            out.append(Attack(kind, version=aa_version, components=components,
                              queries=square_queries if aa_version == "custom" else 0))
        else:
            out.append(Attack(kind))
    return out


def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Predicted labels, batched, without gradients."""
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, x.shape[0], batch_size)])


# --- white-box attacks ---------------------------------------------------------------------


def pgd_flags(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "Linf",
              steps: int = 20, step_size: float | None = None, restarts: int = 1, loss: str = "ce",
              momentum: float | None = None, random_init: bool = True) -> torch.Tensor:
    """True where no iterate of any restart is misclassified (one batch).

    ``momentum`` turns the ascent into MIM (Dong et al., 2018): the step follows the sign (L2:
    the normalised value) of an accumulated, L1-normalised gradient. FGSM is one step of size
    eps from x without a random start.
    """
    loss_fn: Callable = cw_loss if loss == "cw" else ce_loss
    alpha = eps / 4 if step_size is None else step_size
    robust = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    for _ in range(restarts):
        alive = robust.nonzero().squeeze(1)
        if alive.numel() == 0:
            break
        xs, ys = x[alive], y[alive]
        x_adv = random_start(xs, eps, "uniform", norm) if random_init else xs.clone()
        survived = torch.ones_like(ys, dtype=torch.bool)
        velocity = torch.zeros_like(xs)
        for _ in range(steps):
            x_adv = x_adv.detach().requires_grad_(True)
            logits = model(x_adv)
            survived &= logits.argmax(1) == ys
            (grad,) = torch.autograd.grad(loss_fn(logits, ys).sum(), x_adv)
            if momentum is not None:
                velocity = momentum * velocity + grad / flat_norm(grad, 1).clamp_min(1e-12)
                grad = velocity
            x_adv = project(x_adv.detach() + alpha * step_direction(grad, norm), xs, eps, norm)
        with torch.no_grad():
            survived &= model(x_adv).argmax(1) == ys
        robust[alive] = survived
    return robust


def square_flags(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "Linf",
                 queries: int = 5000, seed: int = 0) -> torch.Tensor:
    """Square attack (Andriushchenko et al., 2020): score-based, so gradient masking cannot hide from it."""
    from pyautoattack.square import SquareAttack

    if norm == "L2" and min(x.shape[-2:]) < 5:
        raise ConfigError(f"the L2 square attack needs images of at least 5x5 pixels, got {tuple(x.shape[-2:])}; "
                          f"use --norm Linf or drop square")
    attack = SquareAttack(model, p_init=0.8, n_queries=queries, eps=eps, norm=norm, n_restarts=1, seed=seed,
                          verbose=False, device=x.device, resc_schedule=False)
    adv = attack.perturb(x, y)
    with torch.no_grad():
        return model(adv).argmax(1) == y


# --- running a list of attacks -------------------------------------------------------------


def attack_flags(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, attacks: list[Attack], *, eps: float,
                 norm: str = "Linf", step_size: float | None = None, batch_size: int = 256, seed: int = 0,
                 state_dir=None, progress: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict]:
    """(clean flags, {attack key: robust flags}, extra details), all flags on the CPU.

    Only clean-correct samples are attacked (the others are not robust anyway); models run
    in eval mode; each attack starts from the same seed so results are reproducible.
    """
    if norm not in NORMS:
        raise ConfigError(f"--norm: invalid value {norm!r} (allowed: {', '.join(NORMS)})")
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    results: dict[str, torch.Tensor] = {}
    details: dict = {}
    with model_mode(model, "eval"):
        clean = predict(model, x, batch_size) == y
        for attack in attacks:
            torch.manual_seed(seed)
            if attack.kind == "autoattack":
                from .autoattack_runner import autoattack_flags

                flags, by_attack = autoattack_flags(model, x, y, clean, eps=eps, norm=norm, version=attack.version,
                                                    attacks=list(attack.components) or None, seed=seed,
                                                    square_queries=attack.queries or None,
                                                    batch_size=batch_size, state_dir=state_dir, progress=progress)
                details[attack.key.removesuffix("_acc") + "_by_attack"] = by_attack
            else:
                flags = clean.clone()
                todo = clean.nonzero().squeeze(1)
                chunks = [todo[i:i + batch_size] for i in range(0, todo.numel(), batch_size)]
                for idx in progress_bar(chunks, len(chunks), attack.key.removesuffix("_acc"), progress):
                    flags[idx] = _one_batch(model, x[idx], y[idx], attack, eps=eps, norm=norm,
                                            step_size=step_size, seed=seed)
            results[attack.key] = flags.cpu()
    return clean.cpu(), results, details


def _one_batch(model, x, y, attack: Attack, *, eps, norm, step_size, seed) -> torch.Tensor:
    if attack.kind in ("pgd", "cw"):
        return pgd_flags(model, x, y, eps=eps, norm=norm, steps=attack.steps, step_size=step_size,
                         restarts=attack.restarts, loss="ce" if attack.kind == "pgd" else "cw")
    if attack.kind == "mim":
        return pgd_flags(model, x, y, eps=eps, norm=norm, steps=attack.steps,
                         step_size=step_size if step_size is not None else eps / attack.steps,
                         momentum=1.0, random_init=False)
    if attack.kind == "fgsm":
        return pgd_flags(model, x, y, eps=eps, norm=norm, steps=1, step_size=eps, random_init=False)
    if attack.kind == "square":
        return square_flags(model, x, y, eps=eps, norm=norm, queries=attack.queries, seed=seed)
    raise ConfigError(f"attack {attack.kind!r} cannot run batch by batch")
