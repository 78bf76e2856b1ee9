"""``advcore new-plugin`` writes a package that installs, is listed by ``advcore plugins`` and passes its own tests."""

import ast
import importlib.util
import json
import os
import subprocess
import sys
import tomllib

import pytest

from advcore.cli import app as cli
from advcore.errors import AdvcoreError, PluginError
from advcore.kit.scaffold import new_plugin


def run_cli(monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["advcore", *args])
    try:
        cli.main()
    except SystemExit as exc:
        return exc.code
    return 0


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Generate advcore-my-method, pip-install it into its own target folder (no deps, no network)."""
    root = tmp_path_factory.mktemp("scaffold")
    package = new_plugin("my-method", root)
    site = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(package)], check=True, capture_output=True)
    return package, site


def test_cli_writes_the_package(tmp_path, monkeypatch, capsys):
    assert run_cli(monkeypatch, "new-plugin", "my-method", "--dir", str(tmp_path)) == 0
    root = tmp_path / "advcore-my-method"
    assert capsys.readouterr().out.startswith(f"created {root}\n")
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == ["README.md", "advcore_my_method/__init__.py", "pyproject.toml", "tests/test_my_method.py"]
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["project"]["name"] == "advcore-my-method"
    assert project["project"]["entry-points"]["advcore.plugins"] == {"my-method": "advcore_my_method"}


def test_every_hook_stub_says_what_to_fill_in(tmp_path):
    source = (new_plugin("my-method", tmp_path) / "advcore_my_method" / "__init__.py").read_text()
    hooks = [f for f in ast.parse(source).body if isinstance(f, ast.FunctionDef)]
    assert {f.name for f in hooks} >= {"advcore_plugin_info", "advcore_select_samples", "advcore_derive_examples",
                                       "advcore_adapt_targets", "advcore_loss_terms", "advcore_after_step",
                                       "advcore_state_dict", "advcore_load_state_dict"}
    for f in hooks:
        doc = ast.get_docstring(f)
        assert doc and ("Fill in" in doc or "Replace" in doc or "Add " in doc), f.name


def test_installed_package_is_listed_by_advcore_plugins(installed):
    _, site = installed
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "advcore", "plugins", "--json"], env=env, capture_output=True,
                          text=True, check=True)
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    mine = rows["my-method"]
    assert (mine["package"], mine["version"]) == ("advcore-my-method", "0.1.0")
    assert "advcore_loss_terms" in mine["hooks"]
    assert mine["options"]["weight"]["default"] == 1.0
    assert "trades" in rows  # the built-in plugins are still there


def test_generated_tests_pass_against_the_installed_package(installed, monkeypatch):
    package, site = installed
    monkeypatch.syspath_prepend(str(site))  # importlib.metadata now finds its dist-info and entry point
    spec = importlib.util.spec_from_file_location("generated_tests", package / "tests" / "test_my_method.py")
    tests = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tests)
    tests.test_my_method_passes_the_conformance_kit()
    tests.test_my_method_adds_its_weighted_loss_term()
    assert sys.modules["advcore_my_method"].__file__.startswith(str(site))


@pytest.mark.parametrize("name", ["My-Method", "my_method", "-x", "x--y", "2fast"])
def test_bad_names_are_refused_in_one_line(tmp_path, name):
    with pytest.raises(AdvcoreError, match=f"plugin name '{name}' is not allowed; use lowercase letters"):
        new_plugin(name, tmp_path)


def test_an_installed_name_is_refused(tmp_path):
    with pytest.raises(PluginError, match="a plugin named 'trades' is already installed \\(package advcore-trades\\)"):
        new_plugin("trades", tmp_path)


def test_an_existing_package_folder_is_not_overwritten(tmp_path, monkeypatch, capsys):
    new_plugin("my-method", tmp_path)
    assert run_cli(monkeypatch, "new-plugin", "my-method", "--dir", str(tmp_path)) == 1  # a user error
    assert capsys.readouterr().err.strip() == (f"error: {tmp_path / 'advcore-my-method'} already exists and is not "
                                               f"empty; choose another --dir or remove it")


@pytest.fixture(scope="module")
def installed_pair(tmp_path_factory):
    """A package with two plugins, an add-on and an adversary, pip-installed into its own target folder."""
    root = tmp_path_factory.mktemp("scaffold-pair")
    package = new_plugin("pair-addon", root, also=["pair-adversary:adversary"])
    site = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(package)], check=True, capture_output=True)
    return package, site


def test_one_package_can_hold_several_plugins_with_a_stub_for_every_hook(installed_pair):
    from advcore.kernel.hookspecs import CONTRACT

    package, _ = installed_pair
    entry = tomllib.loads((package / "pyproject.toml").read_text())["project"]["entry-points"]["advcore.plugins"]
    assert entry == {"pair-addon": "advcore_pair_addon.pair_addon", "pair-adversary": "advcore_pair_addon.pair_adversary"}
    for module in ("pair_addon", "pair_adversary"):
        source = (package / "advcore_pair_addon" / f"{module}.py").read_text()
        for contract in CONTRACT:
            assert f"def {contract.name}(" in source, f"{module} has no stub for {contract.name}"
    adversary = (package / "advcore_pair_addon" / "pair_adversary.py").read_text()
    assert "\n@hookimpl\ndef advcore_generate_adversarial(" in adversary  # its role's hook is active
    assert "# def advcore_attack_objective(" in adversary  # another role's hook is not


def test_both_generated_plugins_pass_their_generated_tests(installed_pair, monkeypatch):
    package, site = installed_pair
    monkeypatch.syspath_prepend(str(site))
    for module in ("pair_addon", "pair_adversary"):
        spec = importlib.util.spec_from_file_location(f"generated_{module}", package / "tests" / f"test_{module}.py")
        tests = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tests)
        getattr(tests, f"test_{module}_passes_the_conformance_kit")()
        getattr(tests, f"test_{module}_adds_its_weighted_loss_term")()


def test_a_bad_role_is_refused_in_one_line(tmp_path):
    with pytest.raises(AdvcoreError, match="role 'critic' of plugin 'x' is not allowed; use one of objective, "
                                           "adversary, head"):
        new_plugin("my-method", tmp_path, also=["x:critic"])
