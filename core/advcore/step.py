"""The records that flow through the hooks: one `Step` per batch, `LossTerm`s, `AttackObjective`.

Plugins never call each other; they read and write these fields. Loss terms stay
per-sample vectors until the core reduces them, so reweighting and masks compose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # pragma: no cover
    from .run import Run

__all__ = ["AttackObjective", "LossTerm", "Step", "soft_cross_entropy"]


@dataclass(frozen=True)
class AttackObjective:
    """What the base adversary maximises; owned by the objective plugin.

    ``prepare(model, x, y)`` runs once per attack in attack mode, without gradients, and
    returns the target the loss compares against (labels for CE, clean probabilities for
    KL). ``loss(logits_adv, target)`` returns per-sample values [B] to maximise.
    ``init`` is "uniform" (U[-eps, eps], clipped to the input range) or "normal"
    (x + 0.001 N(0, 1), unclipped: a KL loss has zero gradient at exactly x).
    ``mode`` is the model's train/eval mode while examples are generated.
    """

    name: str
    loss: Callable[[torch.Tensor, Any], torch.Tensor]
    prepare: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], Any] | None = None
    init: Literal["uniform", "normal", "none"] = "uniform"
    mode: Literal["eval", "train"] = "eval"

    def target(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Any:
        if self.prepare is None:
            return y
        with torch.no_grad():
            return self.prepare(model, x, y)


@dataclass
class LossTerm:
    """A named per-sample loss term [B] with a scalar weight.

    With ``mask`` the term is averaged over the masked samples only (e.g. RAAT's JS term
    over clean-correct pairs); an empty mask contributes zero.
    """

    name: str
    values: torch.Tensor
    weight: float = 1.0
    mask: torch.Tensor | None = None


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample CE against hard labels [B] or soft targets [B, K]."""
    if target.dim() == 1:
        return F.cross_entropy(logits, target, reduction="none")
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1)


@dataclass(eq=False)
class Step:
    """One batch on its way through the hooks.

    ``examples`` holds named inputs: "clean" (always), "attack" (the base adversary's
    output, never altered) and "adv" (what the objective trains on; derived-example hooks
    may replace rows). ``targets`` maps example names to labels [B] or soft targets [B, K];
    a missing name means the true labels ``y``. ``model`` runs attacks and selection
    passes; ``train_model`` (when set: the same parameters behind DDP or speed options)
    runs the training forwards of ``logits``. ``loss`` is the composed loss tensor;
    ``loss_value`` the update's loss as a float, set by the core after the update.
    """

    run: "Run"
    model: torch.nn.Module
    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    epoch: int
    batch: int
    eps: torch.Tensor
    step_size: torch.Tensor
    steps: int
    view: torch.Tensor | None = None
    num_views: int = 1
    crop: torch.Tensor | None = None
    flip: torch.Tensor | None = None
    replay: int = 0
    groups: dict[str, torch.Tensor] = field(default_factory=dict)
    examples: dict[str, torch.Tensor] = field(default_factory=dict)
    targets: dict[str, torch.Tensor] = field(default_factory=dict)
    terms: list[LossTerm] = field(default_factory=list)
    weights: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    loss_value: float | None = None
    records: dict[str, tuple[float, str]] = field(default_factory=dict)
    train_model: torch.nn.Module | None = field(default=None, repr=False)
    _logits: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.examples.setdefault("clean", self.x)

    @property
    def size(self) -> int:
        return int(self.y.shape[0])

    def target(self, name: str) -> torch.Tensor:
        return self.targets.get(name, self.y)

    def logits(self, name: str) -> torch.Tensor:
        """Training-mode logits of ``examples[name]``, computed once per distinct tensor.

        Two names bound to the same tensor share one forward pass, so objectives and
        add-ons may all ask for what they need without paying twice.
        """
        x = self.examples[name]
        key = id(x)
        cached = self._logits.get(key)
        if cached is None or cached[0] is not x:
            cached = (x, (self.model if self.train_model is None else self.train_model)(x))
            self._logits[key] = cached
        return cached[1]

    def clear_logits(self) -> None:
        """Forget cached forwards (call after changing the weights, as AWP does)."""
        self._logits.clear()

    def supervised_loss(self, name: str) -> torch.Tensor:
        """Per-sample CE of ``examples[name]`` against ``target(name)``.

        Classification terms go through here so head plugins can adjust the training
        logits (HE's angular margin) and target plugins can swap in soft targets.
        """
        target = self.target(name)
        logits = self.run.hooks.adjust_logits(self, self.logits(name), target)
        return soft_cross_entropy(logits, target)

    def term(self, name: str, values: torch.Tensor, weight: float = 1.0,
             mask: torch.Tensor | None = None) -> LossTerm:
        """Shorthand for ``LossTerm(...)``; return the terms from ``advcore_loss_terms``."""
        return LossTerm(name, values, weight, mask)

    def record(self, name: str, value: float, reduce: Literal["mean", "sum"] = "mean") -> None:
        """Add a per-step number to the epoch metrics (averaged or summed over steps)."""
        self.records[name] = (float(value), reduce)

    def with_model(self, model: torch.nn.Module) -> "Step":
        """A shallow copy that runs ``model`` (e.g. AWP's proxy) with an empty logits cache."""
        clone = Step(**{k: getattr(self, k) for k in self.__dataclass_fields__ if k != "_logits"})
        clone.model = model
        clone.train_model = None
        clone.examples = dict(self.examples)
        clone.targets = dict(self.targets)
        clone.terms = []
        clone.records = {}
        return clone
