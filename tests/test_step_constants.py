"""A step's constant tensors are reused only while unchanged; a hook nobody implements is not dispatched."""

import types

import torch

from advcore import hookimpl
from advcore.engine import train_step
from advcore.kernel.plugins import Hooks, build_manager
from advcore.testing import tiny_batch, tiny_run


def test_eps_changed_in_place_by_one_step_does_not_reach_the_next():
    run = tiny_run(["standard"])
    seen = []

    @hookimpl
    def advcore_select_samples(run, step):
        seen.append((step.eps.clone(), step.step_size.clone(), step.view.clone()))
        step.eps.mul_(0.5)  # in place: this step's budget only
        step.view.add_(3)

    run.hooks.pm.register(types.SimpleNamespace(advcore_select_samples=advcore_select_samples), name="halver")
    batch = tiny_batch(run)
    for i in range(3):
        train_step(run, batch, 0, i)
    n = batch.y.numel()
    for eps, step_size, view in seen:  # every step starts from the run's values, whatever the last one did
        assert torch.equal(eps, torch.full((n,), run.eps))
        assert torch.equal(step_size, torch.full((n,), run.step_size))
        assert torch.equal(view, torch.zeros(n, dtype=torch.int64))


def test_equal_eps_and_step_size_are_separate_tensors():
    run = tiny_run(["standard"])
    run.step_size = run.eps  # the same value: still two tensors, so changing one leaves the other
    kept = {}

    @hookimpl
    def advcore_select_samples(run, step):
        kept["same"] = step.eps is step.step_size
        step.eps.zero_()
        kept["step_size"] = step.step_size.clone()

    run.hooks.pm.register(types.SimpleNamespace(advcore_select_samples=advcore_select_samples), name="zeroer")
    train_step(run, tiny_batch(run), 0, 0)
    assert kept["same"] is False
    assert torch.all(kept["step_size"] == run.eps)


def test_a_hook_registered_after_the_first_call_is_called():
    hooks = Hooks(build_manager([]))
    step = types.SimpleNamespace(size=2, terms=[])
    assert hooks.sample_weights(None, step) is None  # nobody implements it: pluggy's empty answer
    assert hooks.attack_objective(None, step) is None  # a first-result hook: None
    w = torch.tensor([1.0, 3.0])

    @hookimpl
    def advcore_sample_weights(run, step):
        return w

    hooks.pm.register(types.SimpleNamespace(advcore_sample_weights=advcore_sample_weights), name="late")
    assert torch.equal(hooks.sample_weights(None, step), w)
