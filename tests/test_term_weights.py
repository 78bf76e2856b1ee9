"""Sample weights that target named loss terms: the reduction against a hand formula."""

import types

import pytest
import torch

from advcore import LossTerm, TermWeights, hookimpl
from advcore.kernel.core_plugin import reduce_terms
from advcore.errors import PluginError
from advcore.kernel.plugins import Hooks, build_manager


def terms():
    return [LossTerm("ce", torch.tensor([1.0, 2.0, 3.0, 4.0])),
            LossTerm("kl", torch.tensor([0.5, 0.0, 2.0, 1.0]), weight=3.0),
            LossTerm("js", torch.tensor([1.0, 1.0, 5.0, 7.0]), weight=0.5, mask=torch.tensor([1, 1, 0, 1]).bool())]


def test_weights_for_one_term_leave_the_others_plain_means():
    w = torch.tensor([1.0, 3.0, 0.0, 4.0])
    got = reduce_terms(terms(), {"ce": None, "kl": w, "js": None})
    # ce: plain mean 10/4; kl: 3 * (0.5 + 0 + 0 + 4) / 8; js: 0.5 * mean over the mask (1 + 1 + 7) / 3
    assert got.item() == pytest.approx(2.5 + 3 * 4.5 / 8 + 0.5 * 3.0)


def test_a_tensor_for_every_term_and_a_dict_of_the_same_tensor_agree():
    w = torch.tensor([2.0, 1.0, 1.0, 0.5])
    assert reduce_terms(terms(), w).item() == pytest.approx(reduce_terms(terms(), dict.fromkeys(["ce", "kl", "js"], w)).item())
    assert reduce_terms(terms(), {"ce": None}).item() == pytest.approx(reduce_terms(terms(), None).item())


def plugin(result):
    """An in-memory plugin whose advcore_sample_weights returns ``result``."""

    @hookimpl
    def advcore_sample_weights(run, step):
        return result

    return types.SimpleNamespace(advcore_sample_weights=advcore_sample_weights)


def hooks_with(*results):
    pm = build_manager([])
    for i, r in enumerate(results):
        pm.register(plugin(r), name=f"p{i}")
    return Hooks(pm)


def test_all_term_and_targeted_weights_multiply_per_term():
    step = types.SimpleNamespace(size=4, terms=terms())
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    b = torch.tensor([0.5, 0.5, 1.0, 2.0])
    got = hooks_with(a, TermWeights(b, ("kl",))).sample_weights(None, step)
    assert set(got) == {"ce", "kl", "js"}
    assert torch.equal(got["ce"], a) and torch.equal(got["js"], a)
    assert torch.equal(got["kl"], a * b)
    assert torch.equal(hooks_with(TermWeights(b)).sample_weights(None, step), b)  # terms=None: a plain tensor


def test_a_targeted_term_that_does_not_exist_is_named_with_the_ones_that_do():
    step = types.SimpleNamespace(size=4, terms=terms())
    with pytest.raises(PluginError, match="targets loss term\\(s\\) adv, but this step's terms are ce, kl, js"):
        hooks_with(TermWeights(torch.ones(4), ("adv",))).sample_weights(None, step)
