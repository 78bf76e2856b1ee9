"""The public plugin API is what docs/api.md lists, built-in plugins use nothing else, and all of it is documented."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "docs" / "mkdocs"))
import api_reference  # noqa: E402

PUBLIC = api_reference.public_names()
PLUGIN_FILES = sorted(p for p in (REPO / "plugins").rglob("*.py"))


def private_imports(path: Path) -> list[str]:
    """Every advcore name a file imports that is not public, as 'line: name'."""
    bad = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "advcore" and alias.name not in PUBLIC:
                    bad.append(f"{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "advcore":
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if node.module == "advcore" and (alias.name in PUBLIC["advcore"] or full in PUBLIC):
                    continue
                if node.module in PUBLIC and node.module != "advcore" and alias.name in PUBLIC[node.module]:
                    continue
                bad.append(f"{node.lineno}: from {node.module} import {alias.name}")
    return bad


def test_the_plugin_files_are_found():
    assert len(PLUGIN_FILES) > 40 and any(p.parts[-2] == "tests" for p in PLUGIN_FILES)


@pytest.mark.parametrize("path", PLUGIN_FILES, ids=lambda p: str(p.relative_to(REPO / "plugins")))
def test_plugins_import_only_the_documented_api(path):
    bad = private_imports(path)
    assert not bad, f"{path.relative_to(REPO)} imports names docs/api.md does not list: {bad}"


@pytest.mark.parametrize("path", PLUGIN_FILES, ids=lambda p: str(p.relative_to(REPO / "plugins")))
def test_plugins_leave_the_cores_stash_entries_alone(path):
    text = path.read_text()
    assert not re.search(r"stash(\[|\.get\(|\.pop\(|\.setdefault\()\s*[\"']advcore\.", text), \
        f"{path.relative_to(REPO)} reads a core stash entry; use the documented Run fields instead"
    keys = [n.value for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and re.fullmatch(r"advcore\.[a-z_]+", n.value) and n.value not in PUBLIC
            and n.value != "advcore.core"]  # the core's name in plans and hook orders
    assert not keys, f"{path.relative_to(REPO)} names core-internal keys {keys}; use the documented Run fields"


def test_the_check_catches_a_private_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from advcore.trainer import train\nfrom advcore import Step, hookimpl\n"
                      "from advcore.attacks import pgd\nimport advcore.checkpoint\n")
    assert private_imports(sample) == ["1: from advcore.trainer import train", "4: import advcore.checkpoint"]


def test_api_page_is_current():
    assert (REPO / "docs" / "api.md").read_text() == api_reference.render(), \
        "docs/api.md is stale; run: python3 docs/mkdocs/api_reference.py"


def documented_objects():
    for module, names in PUBLIC.items():
        mod = importlib.import_module(module)
        for name in names:
            yield f"{module}.{name}", getattr(mod, name)


@pytest.mark.parametrize("qualname, obj", list(documented_objects()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_public_name_and_field_has_a_docstring(qualname, obj):
    if not (inspect.isfunction(obj) or inspect.isclass(obj)):
        return  # constants and type aliases: described where they are defined
    assert inspect.getdoc(obj), f"{qualname} has no docstring"
    if qualname == "advcore.RunConfig":
        missing = [key for key, _, _, doc in api_reference.config_rows(obj) if not doc]
    else:
        missing = [name for name, _, doc in api_reference.public_fields(obj) if not doc] if inspect.isclass(obj) else []
    assert not missing, f"{qualname}: fields without a docstring: {', '.join(missing)}"


def test_importing_advcore_does_not_import_torch():
    code = "import sys, advcore; assert 'torch' not in sys.modules; advcore.Step; assert 'torch' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
