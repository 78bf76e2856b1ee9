"""Per-sample loss history for instance difficulty (Liu et al., hard adversarial instances, Eq. 1).

Records, for every dataset index and epoch, the summed training loss of the sample's perturbed
input and the number of visits, in the per-sample state (so it is checkpointed and resumed
with the run). ``advcore analyze difficulty RUN`` turns it into d(x) and a CSV. It adds no loss
and no forward pass: the loss is read from the training forward the objective already made.
Enabled with ``data.subset = "easiest:N"`` / ``"hardest:N"`` and ``options.difficulty.file`` (that
CSV), it also picks the run's class-balanced training subset (Sec. 4.1).
"""

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from advcore import PluginInfo, PluginOptions, hookimpl
from .scores import LABEL, LOSS_SUM, SUBSET_KINDS, VISITS, ranked_by_difficulty

NAME = "difficulty"


class Options(PluginOptions):
    loss: Literal["ce", "terms", "error01"] = Field(
        "ce", description="ce: CE of the trained-on adversarial input vs its label (Eq. 1); terms: the "
                          "per-sample total of the objective's loss terms; error01: the 0-1 error "
                          "[argmax != y] of that input (App. D.1, Fig. 3: correlation 0.95 with ce)")
    file: str | None = Field(None, description="CSV from 'advcore analyze difficulty' that ranks data.subset "
                                               "easiest:N / hardest:N")


@hookimpl
def advcore_plugin_info():
    return PluginInfo(summary="record per-sample training losses for instance difficulty (analyze difficulty)",
                      options=Options)


@hookimpl
def advcore_training_subset(options, dataset, kind, n):
    """data.subset easiest:N / hardest:N, ranked by the difficulty CSV in options.difficulty.file."""
    if kind not in SUBSET_KINDS:
        return None
    return ranked_by_difficulty(f"{kind}:{n}", dataset, options[NAME].file)


@hookimpl
def advcore_on_run_start(run):
    """A resumed run with more epochs than the checkpoint's gets its history widened."""
    for name in (LOSS_SUM, VISITS):
        if name in run.state and run.state[name].shape[1] < run.config.epochs:
            old = run.state[name]
            run.state[name] = torch.cat([old, old.new_zeros(old.shape[0], run.config.epochs - old.shape[1])], 1)


@hookimpl
def advcore_observe_loss(run, step):
    """Read the per-sample CE (or 0-1 error) from the update's own training forward; adds no term."""
    mode = run.options[NAME].loss
    if mode in ("ce", "error01"):
        name = "adv" if "adv" in step.examples else "clean"
        logits = step.logits(name).detach().float()
        run.stash[NAME] = (F.cross_entropy(logits, step.y, reduction="none") if mode == "ce"
                           else (logits.argmax(dim=1) != step.y).float())


def terms_total(step) -> torch.Tensor:
    """sum_t weight_t * l_t per sample; a masked term counts only where its mask is set."""
    total = torch.zeros(step.size, device=step.y.device)
    for term in step.terms:
        values = term.values.detach().float()
        if term.mask is not None:
            values = values * term.mask.to(values.dtype)
        total += term.weight * values
    return total


@hookimpl
def advcore_after_step(run, step):
    losses = run.stash.pop(NAME, None) if run.options[NAME].loss != "terms" else terms_total(step)
    if losses is None:
        return
    epochs = run.config.epochs
    loss_sum = run.state.tensor(LOSS_SUM, (epochs,))
    visits = run.state.tensor(VISITS, (epochs,), torch.int32)
    labels = run.state.tensor(LABEL, (), torch.int64, -1)
    col = torch.full_like(step.index, step.epoch)
    loss_sum.index_put_((step.index, col), losses.to(loss_sum.dtype), accumulate=True)
    visits.index_put_((step.index, col), torch.ones_like(step.index, dtype=torch.int32), accumulate=True)
    labels[step.index] = step.y
