"""Every hook an advcore plugin can implement, and nothing else.

Per batch the core calls, in order: ``advcore_select_samples`` -> ``advcore_attack_objective``
-> ``advcore_generate_adversarial`` -> ``advcore_derive_examples`` -> ``advcore_adapt_targets``
-> ``advcore_update`` (which calls ``advcore_loss_terms``, ``advcore_adjust_logits``,
``advcore_sample_weights`` and ``advcore_observe_loss``) -> ``advcore_after_step``. Lifecycle
hooks surround it. ``CONTRACT`` below is the one table of what each hook may do; the specs'
first-result flags, the facade's result checks, the conformance probe and docs/hooks.md
are derived from it.
Implementations declare only the arguments they use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .config import RunConfig
    from ..data.datasets import Dataset
    from .plugins import PluginInfo
    from .run import Run
    from ..attacks import AttackStep
    from .step import AttackObjective, LossTerm, Step
    from .weights import TermWeights

__all__ = [
    "hookimpl",
    "hookspec",
    "HookContract",
    "CONTRACT",
    "advcore_plugin_info",
    "advcore_configure_model",
    "advcore_data_views",
    "advcore_training_subset",
    "advcore_on_run_start",
    "advcore_on_run_end",
    "advcore_on_epoch_start",
    "advcore_on_epoch_end",
    "advcore_select_samples",
    "advcore_attack_objective",
    "advcore_generate_adversarial",
    "advcore_attack_step",
    "advcore_derive_examples",
    "advcore_adapt_targets",
    "advcore_loss_terms",
    "advcore_adjust_logits",
    "advcore_sample_weights",
    "advcore_update",
    "advcore_observe_loss",
    "advcore_after_step",
    "advcore_state_dict",
    "advcore_load_state_dict",
]

_marker = pluggy.HookspecMarker("advcore")
hookimpl = pluggy.HookimplMarker("advcore")


@dataclass(frozen=True)
class HookContract:
    """One row of the hook contract: the single source the specs, the facade's checks, the
    conformance probe and docs/hooks.md are all derived from (tests/test_hook_contract.py)."""

    name: str
    when: str
    """When the core calls it."""
    may_change: str
    """What an implementation may change."""
    result: str
    """What an implementation returns: "none", "PluginInfo", "int>=1", "AttackObjective?",
    "tensor like step.x", "stop mask?", "indices?", "list[LossTerm]?", "tensor like logits?", "weights?", "loss tensor",
    "state dict?" (a trailing ? means None is allowed)."""
    firstresult: bool = False
    """True: the first non-None result is used and the rest are not called."""
    wrappable: bool = False
    """True: ``@hookimpl(wrapper=True)`` implementations may surround the others."""
    per_step: bool = False
    """True: called for every batch (and replay)."""
    exclusive: bool = True
    """For first-result hooks: True means only one enabled plugin may implement it; False lets
    several, each answering only its own cases (None for the others)."""


CONTRACT: tuple[HookContract, ...] = (
    HookContract("advcore_plugin_info", "once per plugin, when it is loaded (also by `advcore plugins`)",
                 "nothing", "PluginInfo"),
    HookContract("advcore_configure_model", "once per run after the model is built, before checkpoints load; "
                 "again when a checkpoint's model is rebuilt for evaluation",
                 "the model in place (e.g. swap `model.head`); record it in `model.advcore_head`", "none"),
    HookContract("advcore_data_views", "once per run before the loader is built",
                 "nothing", "int>=1"),
    HookContract("advcore_training_subset", "once per run before the data is placed, for `data.subset = "
                 "\"KIND:N\"` with a KIND the core does not draw itself", "nothing", "indices?", firstresult=True,
                 exclusive=False),
    HookContract("advcore_on_run_start", "once per run after model, optimizer and a resumed checkpoint are ready",
                 "`run.state` (create per-sample state), `run.stash[name]`, `run.replays`", "none"),
    HookContract("advcore_on_run_end", "once after the last epoch (not when interrupted)", "nothing", "none"),
    HookContract("advcore_on_epoch_start", "before the first batch of every epoch", "`run.stash[name]`", "none"),
    HookContract("advcore_on_epoch_end", "after the epoch's evaluation, before metrics.jsonl is written",
                 "add `<plugin>.<name>` keys to `metrics` (never change existing ones)", "none"),
    HookContract("advcore_select_samples", "first for every batch", "`step.eps`, `step.step_size` [B], "
                 "`step.groups`", "none", per_step=True),
    HookContract("advcore_attack_objective", "for every batch and replay, before example generation",
                 "nothing; a wrapper may return a changed copy of the objective (IAAT republishes its mode)",
                 "AttackObjective?", firstresult=True, wrappable=True, per_step=True),
    HookContract("advcore_generate_adversarial", "after the objective, model in `objective.mode`, no parameter "
                 "gradients", "nothing", "tensor like step.x", firstresult=True, wrappable=True, per_step=True),
    HookContract("advcore_attack_step", "inside a PGD-running adversary (pgd, fat), before each of its K steps",
                 "nothing (the attack's tensors are read-only); stop samples by returning their mask", "stop mask?",
                 per_step=True),
    HookContract("advcore_derive_examples", "after the base adversary (also when there is none)",
                 "add `step.examples`, replace rows of `examples[\"adv\"]`, add `step.groups`", "none",
                 per_step=True),
    HookContract("advcore_adapt_targets", "after all examples exist", "`step.targets[name]`", "none", per_step=True),
    HookContract("advcore_loss_terms", "inside the update, model in train mode", "nothing",
                 "list[LossTerm]?", per_step=True),
    HookContract("advcore_adjust_logits", "by `step.supervised_loss` for every classification term",
                 "nothing", "tensor like logits?", firstresult=True, per_step=True),
    HookContract("advcore_sample_weights", "inside the update, after the loss terms exist", "nothing",
                 "weights?", per_step=True),
    HookContract("advcore_update", "once per batch and replay after targets", "the parameters (through the "
                 "optimizer); wrappers may change them around the update and must undo what they did",
                 "loss tensor", firstresult=True, wrappable=True, per_step=True),
    HookContract("advcore_observe_loss", "inside the update, after the loss is composed and before backward",
                 "`run.state` rows `step.index`, `run.stash[name]` (never the loss or the terms)", "none",
                 per_step=True),
    HookContract("advcore_after_step", "once per batch and replay after the update", "`run.state` rows "
                 "`step.index`, `run.stash[name]`", "none", per_step=True),
    HookContract("advcore_state_dict", "when a checkpoint is written", "nothing", "state dict?"),
    HookContract("advcore_load_state_dict", "once when a run resumes, after the core's state is restored",
                 "`run.stash[name]` and what the plugin keeps", "none"),
)
"""Every hook, in call order within its family."""

CONTRACTS = {c.name: c for c in CONTRACT}
"""The contract rows by hook name."""


def hookspec(fn):
    """Declare ``fn`` as the spec of the hook of the same name in ``CONTRACT`` (its firstresult flag)."""
    return _marker(firstresult=CONTRACTS[fn.__name__].firstresult)(fn)



# --- registration -----------------------------------------------------------------------


@hookspec
def advcore_plugin_info() -> "PluginInfo":
    """Describe the plugin: its exclusive roles, the roles it fills by default, its options.

    Called once per plugin when the manager loads it (also for ``advcore plugins``).
    Returns a frozen ``PluginInfo``; the manager pairs it with the entry-point name.

    Example::

        @hookimpl
        def advcore_plugin_info():
            return PluginInfo(roles=("objective",), options=TradesOptions)
    """


# --- lifecycle --------------------------------------------------------------------------


@hookspec
def advcore_configure_model(run: "Run", model: "torch.nn.Module") -> None:
    """Change the model before the optimizer is built (e.g. swap the classifier head).

    Called once per run, after the model is built and before checkpoints are loaded, and
    again whenever a checkpoint's model is rebuilt for evaluation. May modify ``model`` in
    place (``model.head`` is the classifier, ``model.features`` the penultimate map) and
    should record what it did in ``model.advcore_head`` so checkpoints rebuild it.
    Returns nothing.
    """


@hookspec
def advcore_data_views(run: "Run") -> int:
    """Ask for independently augmented views of every training sample.

    Called once per run before the loader is built. Returns how many views this plugin
    needs (1 = the usual single augmentation); the core uses the largest answer. With
    V views a step holds V*B rows: rows ``j, j+B, ...`` are the views of one sample and
    ``step.view`` says which view a row is.
    """


@hookspec
def advcore_training_subset(config: "RunConfig", options: dict, dataset: "Dataset", kind: str,
                            n: int) -> "torch.Tensor | None":
    """Choose the training samples for ``data.subset = "KIND:N"`` when KIND is not the core's.

    The core draws N (the first N per class) and ``random:N`` itself; any other kind is asked
    of the enabled plugins, once per run before the data is placed (and again by ``advcore
    analyze gap``). ``options`` holds every enabled plugin's validated options. Returns the
    sorted dataset indices of a class-balanced subset of N samples (``advcore.ranked_subset``
    builds one from per-sample scores), or None when ``kind`` is not this plugin's. Stops at the
    first non-None result; with none, the run fails naming the kind.
    """


@hookspec
def advcore_on_run_start(run: "Run") -> None:
    """Prepare per-run resources (auxiliary networks, caches) before the first epoch.

    Called once per run after the model, optimizer and checkpoint (if resuming) are ready.
    May create per-sample state in ``run.state`` and objects in ``run.stash``.
    Returns nothing.
    """


@hookspec
def advcore_on_run_end(run: "Run", metrics: dict) -> None:
    """React to the end of training; ``metrics`` is the last epoch's record.

    Called once after the last epoch (not when training is interrupted). Returns nothing.
    """


@hookspec
def advcore_on_epoch_start(run: "Run", epoch: int) -> None:
    """Called before the first batch of every epoch (0-based). Returns nothing."""


@hookspec
def advcore_on_epoch_end(run: "Run", epoch: int, metrics: dict) -> None:
    """Add entries to the epoch's metrics record before it is written to metrics.jsonl.

    Called after the epoch's evaluation. May add JSON-serialisable values to ``metrics``
    under keys prefixed by the plugin name. Returns nothing.
    """


# --- the four families ------------------------------------------------------------------


@hookspec
def advcore_select_samples(run: "Run", step: "Step") -> None:
    """Sample selection: decide each sample's budget and treatment.

    Called first for every batch, before any example is generated. May set
    ``step.eps`` and ``step.step_size`` (per-sample tensors [B]) and add boolean masks to
    ``step.groups``. Every plugin's implementation runs. Returns nothing.
    """


@hookspec
def advcore_attack_objective(run: "Run", step: "Step") -> "AttackObjective | None":
    """The inner loss the base adversary maximises, owned by the objective plugin.

    Called once per batch (and per replay) before example generation. Returns an
    ``AttackObjective`` (loss, preparation, init, model mode) or None when the objective
    trains without adversarial examples. Stops at the first non-None result.
    """


@hookspec
def advcore_generate_adversarial(run: "Run", step: "Step", objective: "AttackObjective") -> "torch.Tensor":
    """Example generation by the base adversary (exactly one plugin owns this role).

    Called with the model already in ``objective.mode`` and parameter gradients off.
    Must honour the per-sample budget ``step.eps`` [B] in the run's threat model
    ``run.norm`` ("Linf" or "L2"; pass it to ``advcore.attacks.pgd``/``project``, or refuse
    L2 with a ConfigError in ``advcore_on_run_start``) and keep inputs in [0, 1]. Returns
    the adversarial batch, stored by the core as ``examples["attack"]`` and
    ``examples["adv"]``. Stops at the first non-None result.
    """


@hookspec
def advcore_attack_step(run: "Run", step: "Step", attack: "AttackStep") -> "torch.Tensor | None":
    """Look inside the base adversary's PGD, once per iteration (FAT's early stop, GAIRAT's counts).

    Called by every PGD-running adversary that passes ``run.hooks.attack_step_callback(run,
    step)`` as ``on_step`` to ``advcore.attacks.pgd`` (the ``pgd`` and ``fat`` plugins do),
    before each of the K steps, with ``attack`` an ``advcore.attacks.AttackStep``: the
    iteration ``index``, the current iterate ``x_adv``, its detached ``logits`` (the forward
    the gradient came from), ``active`` [B] and ``correct`` [B]. Must not change those
    tensors in place. Returns a bool tensor [B] of samples to stop now (they keep their
    current iterate) or None; the stops of all plugins are OR-ed. When no plugin implements
    it the adversary runs the plain loop at no cost. Not meant to be a wrapper.
    """


@hookspec
def advcore_derive_examples(run: "Run", step: "Step") -> None:
    """Example generation, second stage: examples derived from the adversarial one.

    Called after the base adversary (also when there is none). May add entries to
    ``step.examples`` (HAT's helper) or replace rows of ``examples["adv"]`` (RAAT's
    reduced perturbation for boundary samples), and add masks to ``step.groups``.
    Every plugin's implementation runs. Returns nothing.
    """


@hookspec
def advcore_adapt_targets(run: "Run", step: "Step") -> None:
    """Target adaptation: what each example is trained towards.

    Called after all examples exist. May set ``step.targets[name]`` to labels [B] or soft
    targets [B, K] (helper labels, moving-average targets). Every plugin's
    implementation runs. Returns nothing.
    """


@hookspec
def advcore_loss_terms(run: "Run", step: "Step") -> "list[LossTerm] | None":
    """Loss composition: contribute named per-sample loss terms.

    Called inside the update, with the model in train mode. Returns a list of
    ``LossTerm`` (values shaped [B]) or None; the results of all plugins are
    concatenated. ``step.supervised_loss(name)`` gives the per-sample CE of an example
    against its target.
    """


@hookspec
def advcore_adjust_logits(run: "Run", step: "Step", logits: "torch.Tensor", target: "torch.Tensor") -> "torch.Tensor | None":
    """Change the logits a supervised training term sees (HE's angular margin).

    Called by ``step.supervised_loss`` for every classification term, never during
    attacks or evaluation. Returns the adjusted logits or None to leave them as they are.
    Stops at the first non-None result.
    """


@hookspec
def advcore_sample_weights(run: "Run", step: "Step") -> "torch.Tensor | TermWeights | None":
    """Per-sample weights [B] for the loss terms (reweighting).

    Called inside the update after the loss terms exist. Returns non-negative weights [B]
    (every term), ``advcore.TermWeights(w, ("kl",))`` (only the named terms, e.g.
    GAIR-TRADES), or None; the results of all plugins are multiplied term by term. The core
    reduces each term as sum(w * l) / sum(w).
    """


@hookspec
def advcore_update(run: "Run", step: "Step") -> "torch.Tensor":
    """The parameter update: compose the loss, backward, optimizer step.

    The core implements it (trylast); add-ons surround it with ``wrapper=True``
    implementations, e.g. AWP perturbs the weights before ``yield`` and removes the same
    perturbation after. Returns the scalar loss. Stops at the first non-None result.
    """


@hookspec
def advcore_observe_loss(run: "Run", step: "Step") -> None:
    """Observe the loss the update trains on, without adding terms (loss histories, difficulty).

    Called inside the core's update once the loss is composed and before backward, so
    ``step.terms`` (values [B]), ``step.weights`` and ``step.loss`` are those of the real
    update (at AWP's perturbed weights when AWP is on) and ``step.logits(name)`` returns the
    update's own forwards at no cost. Must not change the loss, the terms or the model; may
    write ``run.state`` rows ``step.index``. Not called for proxy passes. Returns nothing.
    """


@hookspec
def advcore_after_step(run: "Run", step: "Step") -> None:
    """Per-sample state updates after the optimizer step (radii, caches, running losses).

    Called once per batch (and replay) after ``advcore_update``. May write to
    ``run.state`` rows ``step.index``. Returns nothing.
    """


# --- checkpoints ------------------------------------------------------------------------


@hookspec
def advcore_state_dict(run: "Run") -> "dict[str, Any] | None":
    """Plugin state that is not per-sample (per-sample state lives in ``run.state``).

    Called when a checkpoint is written. Returns ``{"tensors": {name: Tensor},
    "json": {...}}`` keyed under the plugin's name, or None.
    """


@hookspec
def advcore_load_state_dict(run: "Run", state: "dict[str, Any]") -> None:
    """Restore what ``advcore_state_dict`` returned, after a resume.

    Called once with ``state`` = {plugin name: {"tensors": ..., "json": ...}} for all
    plugins. Returns nothing.
    """
