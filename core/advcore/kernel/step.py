"""The records that flow through the hooks: one `Step` per batch, `LossTerm`s, `AttackObjective`.

Plugins never call each other; they read and write these fields. Loss terms stay
per-sample vectors until the core reduces them, so reweighting and masks compose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal

import torch
import torch.nn.functional as F

from ..errors import PluginError

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
    """Shown in errors and plans (usually the objective plugin's name)."""
    loss: Callable[[torch.Tensor, Any], torch.Tensor]
    """``loss(logits_adv, target)`` -> per-sample values [B] the adversary maximises."""
    prepare: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], Any] | None = None
    """``prepare(model, x, y)`` -> the target ``loss`` compares against, computed once per attack without gradients; None means the labels ``y``."""
    init: Literal["uniform", "normal", "none"] = "uniform"
    """Start of the attack: "uniform" in the ball, "normal" (x + 0.001 N(0, 1)) or "none" (the clean input)."""
    mode: Literal["eval", "train"] = "eval"
    """The model's mode while examples are generated (``attack.model_mode`` can override it)."""

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
    """The term's name (in plans, NaN messages and term-targeted sample weights)."""
    values: torch.Tensor
    """Per-sample values [B], attached to the graph."""
    weight: float = 1.0
    """Scalar factor of the term in the total loss."""
    mask: torch.Tensor | None = None
    """Boolean [B]: average over these samples only (None: all)."""


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample CE against hard labels [B] or soft targets [B, K]."""
    if target.dim() == 1:
        return F.cross_entropy(logits, target, reduction="none")
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1)


@dataclass(eq=False)
class Step:
    """One batch on its way through the hooks.

    Plugins talk to each other only through these fields. A missing ``targets`` entry means
    the true labels. The logits cache holds the training forwards of this step only: it is
    emptied when the step ends (after ``advcore_after_step``) and whenever the weights change
    (``clear_logits``), so read logits inside the hooks, never from a finished step.
    """

    run: "Run"
    """The run this batch belongs to."""
    model: torch.nn.Module
    """The network attacks and selection passes run (the plain model, not a DDP or compiled wrapper)."""
    x: torch.Tensor
    """Clean inputs [B, C, H, W] in [0, 1] (augmented; with several views, V*B rows)."""
    y: torch.Tensor
    """True labels [B]."""
    index: torch.Tensor
    """Dataset index of every row [B]: the key of ``run.state``."""
    epoch: int
    """Epoch, 0-based."""
    batch: int
    """Batch number within the epoch, 0-based."""
    eps: torch.Tensor
    """Per-sample budget [B] in the run's norm; selection plugins may replace it or change it in
    place. Unchanged, it is one tensor reused from step to step (as are ``step_size`` and
    ``view``): copy it (``.clone()``) before keeping it past the step."""
    step_size: torch.Tensor
    """Per-sample attack step size [B]."""
    steps: int
    """Attack iterations (``attack.steps``)."""
    view: torch.Tensor | None = None
    """Which augmented view each row is [B] (0 with one view)."""
    num_views: int = 1
    """Views per sample: rows ``j, j+B/V, ...`` are views of one sample."""
    crop: torch.Tensor | None = None
    """Each row's crop offsets [B, 2] in the padded frame (``run.augment``), or None (not augmented)."""
    flip: torch.Tensor | None = None
    """Whether each row was flipped horizontally [B], or None."""
    replay: int = 0
    """Which replay of the batch this is (Free AT replays each batch ``run.replays`` times)."""
    groups: dict[str, torch.Tensor] = field(default_factory=dict)
    """Named boolean masks [B] (e.g. RAAT's boundary rows), keyed "<plugin>.<name>" or a documented name."""
    examples: dict[str, torch.Tensor] = field(default_factory=dict)
    """Named inputs: "clean" (always), "attack" (the adversary's output, never altered), "adv" (what
    objectives train on; derived-example hooks may replace rows), helpers such as HAT's "helper"."""
    targets: dict[str, torch.Tensor] = field(default_factory=dict)
    """What each example is trained towards: labels [B] or soft targets [B, K], by example name."""
    terms: list[LossTerm] = field(default_factory=list)
    """The loss terms of the update, set by the core inside ``advcore_update``."""
    weights: torch.Tensor | None = None
    """The product of every plugin's sample weights [B] (None: uniform), set inside the update."""
    loss: torch.Tensor | None = None
    """The composed scalar loss (inside the update)."""
    loss_value: float | None = None
    """The update's loss as a float, set by the core after the update (for after-step hooks)."""
    records: dict[str, tuple[float, str]] = field(default_factory=dict)
    """Per-step numbers added with ``record``; averaged or summed into the epoch's metrics."""
    train_model: torch.nn.Module | None = field(default=None, repr=False)
    """The module the training forwards run (same parameters as ``model`` behind DDP or speed options)."""
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

    def record(self, name: str, value: float | torch.Tensor, reduce: Literal["mean", "sum"] = "mean") -> None:
        """Add a per-step number to the epoch metrics (averaged or summed over steps).

        ``name`` follows the naming rule, "<plugin>.<what>" (e.g. "awp.proxy_loss"). ``value``
        may be a one-element tensor: pass it without ``.item()``, so that it is summed where it
        lives and read once at the epoch's end, not synchronised with the host every step.
        """
        if name.partition(".")[0] not in self.run.plugin_names:
            raise PluginError(f"step.record({name!r}): metric names are '<plugin>.<what>' after an enabled plugin "
                              f"(enabled: {', '.join(self.run.plugin_names)})")
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise PluginError(f"step.record({name!r}): a metric is one number, got a tensor of shape "
                                  f"{tuple(value.shape)}; reduce it first (.mean() or .sum())")
            wide = torch.float32 if value.device.type == "mps" else torch.float64  # summed as floats were
            self.records[name] = (value.detach().reshape(()).to(wide), reduce)
        else:
            self.records[name] = (float(value), reduce)

    def keep_input_gradient(self, name: str) -> None:
        """Ask for the gradient of the update's loss with respect to ``examples[name]``.

        Call it before the update (e.g. in ``advcore_derive_examples``); afterwards
        ``input_gradient(name)`` returns it. The gradient flows wherever the update uses
        that tensor (Free AT's replayed step uses it on its own adversarial examples).
        """
        self.examples[name].requires_grad_(True)

    def input_gradient(self, name: str) -> torch.Tensor | None:
        """The gradient asked for with ``keep_input_gradient`` (None when the update did not use it)."""
        x = self.examples.get(name)
        return None if x is None else x.grad

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
