"""Every installed plugin passes the conformance kit, so a new plugin is covered without new tests.

A plugin whose own package in this repository ships a ``tests/test_*conformance*.py`` (the
baselines, the example package) is checked there, with its expected compositions, and is
left out here so the suite does not run it twice.
"""

from pathlib import Path

import pytest

from advcore.kernel.plugins import installed_plugins
from advcore.testing import check_plugin

REPO = Path(__file__).resolve().parents[1]


def has_own_conformance_test(plugin) -> bool:
    try:
        module = plugin.load()
    except Exception:  # noqa: BLE001 - a plugin that does not import is checked (and fails) below
        return False
    package_dir = Path(getattr(module, "__file__", "") or ".").resolve().parent
    tests = package_dir.parent / "tests"
    return REPO in tests.parents and any(tests.glob("test_*conformance*.py"))


PLUGINS = [name for name, p in installed_plugins().items() if not has_own_conformance_test(p)]


@pytest.mark.parametrize("name", PLUGINS)
def test_plugin_passes_the_conformance_kit(name):
    report = check_plugin(name)
    assert {"contracts", "determinism", "checkpoint round-trip"} <= set(report.passed)


def test_every_installed_plugin_is_checked_somewhere():
    own = {name for name, p in installed_plugins().items() if has_own_conformance_test(p)}
    assert own | set(PLUGINS) == set(installed_plugins())
    assert {"trades", "pgd", "label-smoothing"} <= own  # checked by their own packages' tests
