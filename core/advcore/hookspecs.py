"""Every hook an advcore plugin can implement, and nothing else.

Per batch the core calls, in order: ``advcore_select_samples`` -> ``advcore_attack_objective``
-> ``advcore_generate_adversarial`` -> ``advcore_derive_examples`` -> ``advcore_adapt_targets``
-> ``advcore_update`` (which calls ``advcore_loss_terms``, ``advcore_adjust_logits`` and
``advcore_sample_weights``) -> ``advcore_after_step``. Lifecycle hooks surround it.
Implementations declare only the arguments they use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .config import RunConfig
    from .data import Dataset
    from .plugins import PluginInfo
    from .run import Run
    from .step import AttackObjective, LossTerm, Step

__all__ = [
    "hookimpl",
    "hookspec",
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
    "advcore_derive_examples",
    "advcore_adapt_targets",
    "advcore_loss_terms",
    "advcore_adjust_logits",
    "advcore_sample_weights",
    "advcore_update",
    "advcore_after_step",
    "advcore_state_dict",
    "advcore_load_state_dict",
]

hookspec = pluggy.HookspecMarker("advcore")
hookimpl = pluggy.HookimplMarker("advcore")


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


@hookspec(firstresult=True)
def advcore_training_subset(config: "RunConfig", options: dict, dataset: "Dataset", kind: str,
                            n: int) -> "torch.Tensor | None":
    """Choose the training samples for ``data.subset = "KIND:N"`` when KIND is not the core's.

    The core draws N (the first N per class) and ``random:N`` itself; any other kind is asked
    of the enabled plugins, once per run before the data is placed (and again by ``advcore
    analyze gap``). ``options`` holds every enabled plugin's validated options. Returns the
    sorted dataset indices of a class-balanced subset of N samples (``advcore.subsets.ranked_subset``
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


@hookspec(firstresult=True)
def advcore_attack_objective(run: "Run", step: "Step") -> "AttackObjective | None":
    """The inner loss the base adversary maximises, owned by the objective plugin.

    Called once per batch (and per replay) before example generation. Returns an
    ``AttackObjective`` (loss, preparation, init, model mode) or None when the objective
    trains without adversarial examples. Stops at the first non-None result.
    """


@hookspec(firstresult=True)
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


@hookspec(firstresult=True)
def advcore_adjust_logits(run: "Run", step: "Step", logits: "torch.Tensor", target: "torch.Tensor") -> "torch.Tensor | None":
    """Change the logits a supervised training term sees (HE's angular margin).

    Called by ``step.supervised_loss`` for every classification term, never during
    attacks or evaluation. Returns the adjusted logits or None to leave them as they are.
    Stops at the first non-None result.
    """


@hookspec
def advcore_sample_weights(run: "Run", step: "Step") -> "torch.Tensor | None":
    """Per-sample weights [B] applied to every loss term (reweighting).

    Called inside the update after the loss terms exist. Returns non-negative weights or
    None; the results of all plugins are multiplied. The core reduces each term as
    sum(w * l) / sum(w).
    """


@hookspec(firstresult=True)
def advcore_update(run: "Run", step: "Step") -> "torch.Tensor":
    """The parameter update: compose the loss, backward, optimizer step.

    The core implements it (trylast); add-ons surround it with ``wrapper=True``
    implementations, e.g. AWP perturbs the weights before ``yield`` and removes the same
    perturbation after. Returns the scalar loss. Stops at the first non-None result.
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
