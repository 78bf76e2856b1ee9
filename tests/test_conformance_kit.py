"""The conformance kit catches planted faults and names the hook that broke its contract.

Each fault is a small in-memory plugin; a correct plugin of the same shape passes, so the
checks are not simply failing everything.
"""

import pytest
import torch

from advcore import PluginInfo, hookimpl
from advcore.attacks import pgd
from advcore.errors import ConfigError, PluginError
from advcore.testing import ConformanceError, check_plugin


def check(plugin, name, **kwargs):
    kwargs.setdefault("partners", [])
    return check_plugin(plugin, name=name, raise_on_problems=False, **kwargs)


def problems_of(report, hook):
    return [p for p in report.problems if p.hook == hook]


class Adversary:
    """A base adversary: PGD on the objective's loss with the given budget."""

    def __init__(self, budget=lambda run, step: step.eps):
        self.budget = budget

    @hookimpl
    def advcore_plugin_info(self):
        return PluginInfo(summary="test adversary", roles=("adversary",))

    @hookimpl
    def advcore_generate_adversarial(self, run, step, objective):
        target = objective.target(step.model, step.x, step.y)
        eps = self.budget(run, step)
        return pgd(step.model, step.x, target, objective.loss, eps=eps, step_size=eps / 2, steps=2,
                   init=objective.init)


def test_a_correct_adversary_passes_every_check():
    report = check(Adversary(), "good-adversary")
    assert report.ok, str(report)
    assert {"contracts", "determinism", "checkpoint round-trip"} <= set(report.passed)


def test_examples_outside_the_eps_ball_are_reported_with_the_hook():
    report = check(Adversary(budget=lambda run, step: 2 * step.eps), "too-far")
    found = problems_of(report, "advcore_generate_adversarial")
    assert found and "outside the eps-ball" in found[0].message
    assert found[0].plugins == ("too-far",)
    assert "advcore_generate_adversarial (implemented by too-far)" in str(report)


def test_an_adversary_ignoring_per_sample_eps_is_reported_with_the_hook():
    uniform = lambda run, step: torch.full_like(step.eps, run.eps)  # noqa: E731 - the run's scalar budget
    report = check(Adversary(budget=uniform), "uniform-eps")
    found = problems_of(report, "advcore_generate_adversarial")
    assert found and "ignore the per-sample budget step.eps" in found[0].message
    assert "outside the eps-ball" not in found[0].message


def test_examples_outside_the_input_range_are_reported():
    class Unclipped(Adversary):
        @hookimpl
        def advcore_generate_adversarial(self, step):
            return step.x + step.eps.view(-1, 1, 1, 1)  # every pixel at +eps, 1.0 pixels go above 1

    report = check(Unclipped(), "unclipped")
    assert any("input range" in p.message for p in problems_of(report, "advcore_generate_adversarial"))


def test_an_attack_that_accumulates_parameter_gradients_is_reported():
    class Leaky(Adversary):
        @hookimpl
        def advcore_generate_adversarial(self, step, objective):
            x = step.x.clone().requires_grad_(True)
            objective.loss(step.model(x), objective.target(step.model, step.x, step.y)).sum().backward()
            return (step.x + step.eps.view(-1, 1, 1, 1) * x.grad.sign()).clamp(0, 1).detach()

    report = check(Leaky(), "leaky")
    assert any("parameter gradients" in p.message for p in problems_of(report, "advcore_generate_adversarial"))


class Counter:
    """An add-on whose per-sample weights depend on how many steps it has seen."""

    NAME = "counter"

    def __init__(self, save=True, load=True):
        self.save, self.load = save, load

    @hookimpl
    def advcore_after_step(self, run):
        run.stash[self.NAME] = run.stash.get(self.NAME, 0) + 1

    @hookimpl
    def advcore_sample_weights(self, run, step):
        return 1.0 + run.stash.get(self.NAME, 0) * (step.index % 2).float()

    @hookimpl
    def advcore_state_dict(self, run):
        return {self.NAME: {"json": {"count": run.stash.get(self.NAME, 0)}}} if self.save else None

    @hookimpl
    def advcore_load_state_dict(self, run, state):
        if self.load:
            run.stash[self.NAME] = state[self.NAME]["json"]["count"]


def test_state_that_round_trips_passes():
    report = check(Counter(), "counter")
    assert report.ok, str(report)
    assert "checkpoint round-trip" in report.passed


def test_state_that_is_not_restored_is_reported_with_the_hook():
    report = check(Counter(load=False), "counter")
    found = problems_of(report, "advcore_load_state_dict")
    assert found and found[0].check == "checkpoint round-trip"
    assert "plugin 'counter'" in found[0].message and "['count']" in found[0].message
    assert "checkpoint round-trip" not in report.passed


def test_state_that_is_never_saved_is_reported_at_the_hook_it_changes():
    report = check(Counter(save=False, load=False), "counter")
    found = [p for p in report.problems if p.check == "checkpoint round-trip"]
    assert [p.hook for p in found] == ["advcore_sample_weights"]
    assert "after resuming from a checkpoint" in found[0].message


def test_state_not_keyed_by_the_plugin_name_is_reported():
    class Misfiled(Counter):
        @hookimpl
        def advcore_state_dict(self, run):
            return {"count": run.stash.get(self.NAME, 0)}

    report = check(Misfiled(), "counter")
    found = problems_of(report, "advcore_state_dict")
    assert found and "return {'counter': {'tensors'" in found[0].message


def test_module_level_state_breaks_same_seed_same_step():
    class Drifting:
        calls = 0  # shared by every run, like a module global

        @hookimpl
        def advcore_select_samples(self, step):
            Drifting.calls += 1
            step.eps = step.eps / Drifting.calls

    report = check(Drifting(), "drifting")
    found = [p for p in report.problems if p.check == "determinism"]
    assert found and found[0].hook == "advcore_select_samples"
    assert "same seed" in found[0].message


def test_altering_the_adversarys_output_is_reported():
    class Overwriter:
        @hookimpl
        def advcore_derive_examples(self, step):
            step.examples["attack"].mul_(0.5)

    report = check(Overwriter(), "overwriter")
    assert any("examples['attack']" in p.message for p in problems_of(report, "advcore_derive_examples"))


def test_a_derived_adv_outside_the_budget_is_reported():
    class Doubler:
        @hookimpl
        def advcore_derive_examples(self, step):
            step.examples["adv"] = (step.x + 2 * (step.examples["attack"] - step.x)).clamp(0, 1)

    report = check(Doubler(), "doubler")
    found = problems_of(report, "advcore_derive_examples")
    assert found and "examples['adv']" in found[0].message and "eps-ball" in found[0].message


def test_wrong_return_types_are_reported_with_the_hook():
    class BadTerms:
        @hookimpl
        def advcore_loss_terms(self, step):
            return step.supervised_loss("clean")  # a tensor, not a list of LossTerm

    report = check(BadTerms(), "bad-terms")
    assert report.hooks == {"advcore_loss_terms"}
    assert "expected a list of LossTerm" in report.problems[0].message


def test_a_loss_term_without_gradient_is_reported():
    class Detached:
        @hookimpl
        def advcore_loss_terms(self, step):
            return [step.term("frozen", step.supervised_loss("clean").detach())]

    report = check(Detached(), "detached")
    assert any("carries no gradient" in p.message for p in problems_of(report, "advcore_loss_terms"))


def test_soft_targets_that_are_not_distributions_are_reported():
    class Unnormalised:
        @hookimpl
        def advcore_adapt_targets(self, run, step):
            step.targets["adv"] = torch.ones(step.size, run.info.num_classes)

    report = check(Unnormalised(), "unnormalised")
    assert any("probability distributions" in p.message for p in problems_of(report, "advcore_adapt_targets"))


def test_a_refusal_that_names_the_partner_counts_as_refused():
    class Picky:
        @hookimpl
        def advcore_on_run_start(self, run):
            if "trades" in run.plugin_names:
                raise ConfigError("picky does not support trades; use pgd-at or mart")

    report = check(Picky(), "picky", partners=["trades", "mart"])
    assert report.ok, str(report)
    assert report.refused == {"trades": "picky does not support trades; use pgd-at or mart"}
    assert "with mart" in report.passed


def test_a_refusal_that_does_not_name_the_partner_is_reported():
    class Vague:
        @hookimpl
        def advcore_on_run_start(self, run):
            if "trades" in run.plugin_names:
                raise ConfigError("this objective is not supported")

    report = check(Vague(), "vague", partners=["trades"])
    found = problems_of(report, "advcore_on_run_start")
    assert found and found[0].check == "with trades" and "without naming it" in found[0].message


def test_a_crash_in_a_hook_is_reported_with_that_hook():
    class Crashing:
        @hookimpl
        def advcore_after_step(self, run, step):
            raise ValueError("boom")

    report = check(Crashing(), "crashing")
    assert report.hooks == {"advcore_after_step"}
    assert report.problems[0].message.endswith("ValueError: boom")


def test_options_without_defaults_or_descriptions_are_reported():
    from pydantic import Field

    from advcore import PluginOptions

    class Options(PluginOptions):
        strength: float
        rounds: int = Field(3)

    class Undocumented:
        @hookimpl
        def advcore_plugin_info(self):
            return PluginInfo(options=Options)

    report = check(Undocumented(), "undocumented", options={"strength": 1.0})
    messages = [p.message for p in problems_of(report, "advcore_plugin_info")]
    assert any("needs a default for every field" in m for m in messages)
    assert any("strength, rounds have no description" in m for m in messages)


def test_check_plugin_raises_with_every_problem_listed():
    with pytest.raises(ConformanceError) as caught:
        check_plugin(Adversary(budget=lambda run, step: 2 * step.eps), name="too-far", partners=[])
    assert "advcore_generate_adversarial (implemented by too-far)" in str(caught.value)
    assert caught.value.report.plugin == "too-far"


def test_unknown_plugin_names_are_a_one_line_error():
    with pytest.raises(PluginError, match="unknown plugin 'no-such-plugin'; installed plugins: .*pgd-at"):
        check_plugin("no-such-plugin")


def test_an_in_memory_plugin_needs_a_name():
    with pytest.raises(TypeError, match="needs name="):
        check_plugin(Adversary())
