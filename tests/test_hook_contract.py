"""One source for the hook contract: the table in hookspecs.CONTRACT, and everything derived from it."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pluggy
import pytest

from advcore import hookimpl
from advcore.kernel import hookspecs
from advcore.kit.conformance import Probe
from advcore.errors import PluginError
from advcore.kernel.plugins import RESULT_CHECKS, Hooks, Installed, build_manager, check_result, resolve

REPO = Path(__file__).resolve().parents[1]
SPECS = [n for n in hookspecs.__all__ if n.startswith("advcore_")]


def test_the_table_lists_exactly_the_hook_specs_in_order():
    assert [c.name for c in hookspecs.CONTRACT] == SPECS
    defined = sorted(n for n, v in vars(hookspecs).items() if n.startswith("advcore_") and hasattr(v, "advcore_spec"))
    assert defined == sorted(SPECS)


@pytest.mark.parametrize("contract", hookspecs.CONTRACT, ids=lambda c: c.name)
def test_each_spec_is_declared_as_its_row_says(contract):
    pm = pluggy.PluginManager("advcore")
    pm.add_hookspecs(hookspecs)
    assert getattr(pm.hook, contract.name).spec.opts["firstresult"] == contract.firstresult
    assert contract.result in RESULT_CHECKS, f"no check for result kind {contract.result!r}"
    assert contract.when and contract.may_change
    assert inspect.getdoc(getattr(hookspecs, contract.name)), f"{contract.name} has no docstring"


@pytest.mark.parametrize("contract", hookspecs.CONTRACT, ids=lambda c: c.name)
def test_the_facade_calls_every_hook_and_the_probe_observes_it(contract):
    short = contract.name.removeprefix("advcore_")
    if contract.name != "advcore_plugin_info":  # read once at load time, not through a run's manager
        method = getattr(Hooks, short, None) or getattr(Hooks, f"{short}_callback", None)  # attack_step: a callback
        assert callable(method), f"Hooks has no method {short}"
        assert hasattr(Probe, contract.name), f"the conformance probe does not observe {contract.name}"
    facade = inspect.getsource(Hooks)
    if contract.name != "advcore_plugin_info":
        assert f'"{contract.name}"' in facade


def test_result_checks_follow_the_table():
    with pytest.raises(PluginError, match="advcore_data_views returned int; expected a positive int"):
        check_result("advcore_data_views", 0)
    assert check_result("advcore_data_views", 2) == 2
    with pytest.raises(PluginError, match="advcore_attack_objective returned str; expected AttackObjective"):
        check_result("advcore_attack_objective", "ce")


def test_a_wrapper_on_a_hook_the_table_does_not_allow_is_refused():
    class WrapsSelection:
        @hookimpl(wrapper=True)
        def advcore_select_samples(self, step):
            return (yield)

    with pytest.raises(PluginError, match="wraps advcore_select_samples, which may not be wrapped"):
        build_manager(resolve(["pgd-at"]) + [Installed("wrapper", "tests", "0", module=WrapsSelection())])


def test_the_hook_reference_page_is_derived_from_the_table():
    done = subprocess.run([sys.executable, str(REPO / "docs" / "mkdocs" / "hook_reference.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    page = (REPO / "docs" / "hooks.md").read_text()
    for contract in hookspecs.CONTRACT:
        assert contract.may_change in page and contract.when in page
