"""Plugin discovery, composition rules and the hook facade's checks."""

import importlib.metadata as md
import sys
import types

import pytest
import torch

from advcore import PluginInfo, hookimpl
from advcore.errors import PluginError
from advcore.kernel.plugins import Hooks, Installed, build_manager, installed_plugins, resolve
from advcore.testing import tiny_batch, tiny_config
from advcore.engine import build_run, train_step

BASELINES = {"standard", "pgd-at", "trades", "mart", "alp", "pgd", "fgsm-rs", "free"}


def test_every_baseline_is_its_own_distribution_with_one_entry_point():
    found = installed_plugins()
    assert BASELINES <= set(found)
    packages = [found[name].package for name in BASELINES]
    assert len(set(packages)) == len(BASELINES)
    assert found["trades"].package == "advcore-trades"


def test_unknown_plugin_lists_the_installed_ones():
    with pytest.raises(PluginError) as err:
        resolve(["nosuch"])
    message = str(err.value)
    assert "unknown plugin 'nosuch'" in message and "trades" in message and "\n" not in message


def test_two_adversaries_conflict_naming_both():
    with pytest.raises(PluginError, match="'fgsm-rs' and 'free' both claim the adversary role"):
        resolve(["fgsm-rs", "free"])


def test_defaults_fill_unclaimed_roles():
    names = [p.name for p in resolve(["trades"])]
    assert names == ["pgd", "trades"]  # canonical order: PluginInfo.order, then name
    assert [p.name for p in resolve([])] == ["pgd", "pgd-at"]
    assert [p.name for p in resolve(["fgsm-rs"])] == ["fgsm-rs", "pgd-at"]


def _fake_distribution(monkeypatch, tmp_path, name, module_name, source):
    """Install a plugin package on a temporary path with a real dist-info entry point."""
    (tmp_path / f"{module_name}.py").write_text(source)
    info = tmp_path / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[advcore.plugins]\n{name} = {module_name}\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_third_party_plugin_is_discovered_through_its_entry_point(monkeypatch, tmp_path):
    _fake_distribution(monkeypatch, tmp_path, "shout", "shout_plugin", (
        "from advcore import PluginInfo, hookimpl\n"
        "@hookimpl\ndef advcore_plugin_info():\n    return PluginInfo(summary='loud')\n"))
    found = installed_plugins()
    assert found["shout"].package == "shout" and found["shout"].version == "1.0"
    found["shout"].load()
    assert found["shout"].info.summary == "loud"
    assert found["shout"].hooks == ["advcore_plugin_info"]


def test_a_plugin_failing_at_import_is_named_with_its_package(monkeypatch, tmp_path):
    _fake_distribution(monkeypatch, tmp_path, "broken", "broken_plugin", "raise ImportError('no numpy 9')\n")
    with pytest.raises(PluginError, match=r"plugin 'broken' from package broken 1.0 failed to load: ImportError: no numpy 9"):
        resolve(["broken"])
    sys.modules.pop("broken_plugin", None)


def test_misspelled_hook_is_rejected_at_registration():
    class Typo:
        @hookimpl
        def advcore_los_terms(self, step):  # missing "s"
            return []

    with pytest.raises(PluginError, match="advcore_los_terms"):
        build_manager([Installed("typo", "tests", "0", module=Typo())])


class _WrongShape:
    @hookimpl
    def advcore_generate_adversarial(self, step):
        return step.x[:1]


class _Raises:
    @hookimpl
    def advcore_select_samples(self, step):
        raise RuntimeError("radius table missing")


@pytest.mark.parametrize("plugin, message", [
    (_WrongShape(), "advcore_generate_adversarial returned a tensor shaped"),
    (_Raises(), "failed in advcore_select_samples: RuntimeError: radius table missing"),
])
def test_misbehaving_plugins_are_named_with_the_hook(plugin, message):
    plugins = [p for p in resolve(["pgd-at"]) if p.name == "pgd-at"] + [Installed("bad", "tests", "0", module=plugin)]
    run, _ = build_run(tiny_config(["pgd-at"]), None, plugins=plugins)
    with pytest.raises(PluginError, match=message):
        train_step(run, tiny_batch(run, 4), 0, 0)


def test_per_sample_eps_is_honoured_sample_by_sample():
    class Ramp:
        @hookimpl
        def advcore_select_samples(self, step):
            step.eps = torch.linspace(0.0, 0.2, step.size)

    plugins = resolve(["pgd-at"]) + [Installed("ramp", "tests", "0", module=Ramp())]
    run, _ = build_run(tiny_config(["pgd-at"], attack={"steps": 5}), None, plugins=plugins)
    step = train_step(run, tiny_batch(run, 8), 0, 0)
    reach = (step.examples["adv"] - step.x).abs().flatten(1).max(1).values
    budgets = torch.linspace(0.0, 0.2, 8)
    assert torch.all(reach <= budgets + 1e-6)
    assert reach[0] == 0  # eps 0 means the clean input
    assert torch.all(reach[1:] > 0.5 * budgets[1:])  # and the others use their budget


def test_hook_order_is_reported_for_plan():
    order = Hooks(build_manager(resolve(["trades", "fgsm-rs"]))).order()
    assert order["advcore_generate_adversarial"] == ["fgsm-rs"]
    assert order["advcore_update"] == ["advcore.core"]
