"""Free adversarial training (Shafahi et al. 2019): m replays of each batch.

Every replay trains on x + delta and reuses the same backward pass for the input gradient:
delta <- clip(delta + eps * sign(grad_x loss)). delta carries over to the next batch. Run
epochs/m epochs to match the cost of standard training.
"""

import torch
from pydantic import Field

from advcore import PluginInfo, PluginOptions, hookimpl
from advcore.attacks import project
from advcore.errors import ConfigError

NAME = "free"


class Options(PluginOptions):
    replays: int = Field(8, ge=1, description="m: how many times each batch is replayed")


@hookimpl
def advcore_plugin_info():
    return PluginInfo(summary="Free AT: m replays, input gradient from the training backward",
                      roles=("adversary",), options=Options)


@hookimpl(tryfirst=True)  # refuse L2 before other plugins' run-start work
def advcore_on_run_start(run):
    if run.norm != "Linf":  # the replayed step eps * sign(grad) is the Linf ascent
        raise ConfigError(f"{NAME} supports attack.norm=Linf only; use the default pgd adversary for {run.norm}")
    run.replays = run.options[NAME].replays


@hookimpl
def advcore_generate_adversarial(run, step):
    delta = run.stash.get(NAME)
    if delta is None or delta.shape != step.x.shape:
        delta = torch.zeros_like(step.x)
    return project(step.x + delta, step.x, step.eps)


@hookimpl
def advcore_derive_examples(step):
    if "attack" in step.examples:
        step.keep_input_gradient("attack")


@hookimpl
def advcore_after_step(run, step):
    grad = step.input_gradient("attack")
    if grad is None:
        return
    adv = step.examples["attack"]
    stepped = project(adv.detach() + step.eps.view(-1, 1, 1, 1) * grad.sign(), step.x, step.eps)
    run.stash[NAME] = (stepped - step.x).detach()


@hookimpl
def advcore_state_dict(run):
    delta = run.stash.get(NAME)
    return None if delta is None else {NAME: {"tensors": {"delta": delta}}}


@hookimpl
def advcore_load_state_dict(run, state):
    delta = state.get(NAME, {}).get("tensors", {}).get("delta")
    if delta is not None:
        run.stash[NAME] = delta.to(run.device)
