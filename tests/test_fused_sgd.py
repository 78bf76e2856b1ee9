"""advcore's SGD: PyTorch's fused update, with the three things that update gets wrong put right.

Each test compares against PyTorch's default per-tensor SGD on the same parameters and
gradients (an independent implementation of the same update): the fused kernel rounds
differently (one fused multiply-add), so the two agree to float32 rounding, not bit for bit.
"""

from __future__ import annotations

import copy

import pytest
import torch

from advcore.engine.optim import build_optimizer
from advcore.testing import tiny_config, tiny_run

SETTINGS = dict(lr=0.05, momentum=0.9, weight_decay=5e-4)


def _config(**optim):
    return tiny_config(["standard"], optim={**SETTINGS, **optim})


def _pair(model: torch.nn.Module):
    """advcore's optimizer on ``model`` and PyTorch's default SGD on a copy of it."""
    reference = copy.deepcopy(model)
    return build_optimizer(_config(), model), reference, torch.optim.SGD(reference.parameters(), **SETTINGS)


def _step(model, opt, grads):
    for p, g in zip(model.parameters(), grads):
        p.grad = None if g is None else g.clone()
    opt.step()


def _close(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), y in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(x, y, rtol=1e-5, atol=1e-6), name


@pytest.mark.parametrize("nesterov", [False, True])
def test_a_runs_optimizer_is_fused_and_takes_the_reference_update(nesterov):
    # pgd-at's run on the CPU: a channels-last network, momentum and weight decay
    run = tiny_run(["pgd-at"], optim={"momentum": 0.9, "nesterov": nesterov, "weight_decay": 5e-4})
    assert run.optimizer.param_groups[0]["fused"] is True
    reference = copy.deepcopy(run.model)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=run.optimizer.param_groups[0]["lr"], momentum=0.9,
                              nesterov=nesterov, weight_decay=5e-4, foreach=False)
    for _ in range(4):
        grads = [torch.randn_like(p) for p in run.model.parameters()]
        _step(run.model, run.optimizer, grads)
        _step(reference, ref_opt, grads)
    _close(run.model, reference)


def test_a_parameter_whose_first_gradient_comes_late_gets_the_reference_update():
    # PyTorch's fused SGD alone: "TypeError: expected Tensor as element 1 in argument 2, but got NoneType".
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"used": torch.nn.Linear(4, 4), "later": torch.nn.Linear(4, 2)})
    opt, reference, ref_opt = _pair(model)
    for k in range(4):
        grads = [torch.randn_like(p) if k >= 2 or n.startswith("used") else None for n, p in model.named_parameters()]
        _step(model, opt, grads)
        _step(reference, ref_opt, grads)
        _close(model, reference)
    late = model["later"].weight
    assert torch.allclose(opt.state[late]["momentum_buffer"], ref_opt.state[reference["later"].weight]["momentum_buffer"])


def test_a_contiguous_buffer_of_a_channels_last_weight_is_read_in_the_right_order():
    # A checkpoint's buffers come back contiguous; PyTorch's fused kernel alone reads them in the
    # weight's channels-last order and moves the weight by the wrong element's momentum.
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 4, 2).to(memory_format=torch.channels_last)
    opt, reference, ref_opt = _pair(model)
    grads = [torch.randn_like(p) for p in model.parameters()]
    _step(model, opt, grads)
    _step(reference, ref_opt, grads)
    saved = opt.state_dict()
    saved["state"] = {k: {n: v.contiguous() for n, v in s.items()} for k, s in saved["state"].items()}
    assert not saved["state"][0]["momentum_buffer"].is_contiguous(memory_format=torch.channels_last)
    opt.load_state_dict(saved)
    grads = [torch.zeros_like(p) for p in model.parameters()]  # the step is the buffer alone
    _step(model, opt, grads)
    _step(reference, ref_opt, grads)
    _close(model, reference)


def test_a_fused_step_moves_the_version_of_every_weight_it_wrote():
    # Caches keyed on a weight's version (HE's projected head) must see the step.
    model = torch.nn.Linear(3, 2)
    opt = build_optimizer(_config(), model)
    model.weight.grad = torch.ones_like(model.weight)  # the bias has no gradient: not written
    before = (model.weight._version, model.bias._version)
    opt.step()
    assert model.weight._version > before[0] and model.bias._version == before[1]


def test_a_checkpoint_of_the_foreach_update_resumes_with_the_foreach_update():
    # The update rule travels with the optimizer state, so a resumed run is the run it was.
    model = torch.nn.Linear(3, 2)
    old = torch.optim.SGD(model.parameters(), foreach=True, **SETTINGS)
    model.weight.grad = torch.ones_like(model.weight)
    old.step()
    opt = build_optimizer(_config(), model)
    opt.load_state_dict(old.state_dict())
    assert opt.param_groups[0]["foreach"] is True and not opt.param_groups[0]["fused"]
