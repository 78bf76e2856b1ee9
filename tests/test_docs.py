"""The docs keep up with the code: hook reference, one page per built-in method, links.

The full site build (``mkdocs build --strict -f docs/mkdocs/mkdocs.yml``, run by CI after
the tests) also checks anchors and the navigation; these checks need only the standard library.
"""

import importlib.util
import inspect
import re
from pathlib import Path

import pytest

from advcore.kernel import hookspecs
from advcore.kernel.plugins import installed_plugins

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
HOOK_PAGE = DOCS / "hooks.md"


def load_generator():
    spec = importlib.util.spec_from_file_location("hook_reference", DOCS / "mkdocs" / "hook_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def spec_names():
    return [n for n in hookspecs.__all__ if n.startswith("advcore_")]


def expected_signature(name):
    """``def advcore_x(run: Run, step: Step) -> None`` from inspect, independently of the generator."""
    sig = inspect.signature(getattr(hookspecs, name))
    clean = lambda a: str(a).strip("'\"")  # noqa: E731 - annotations are strings (PEP 563 + quoted names)
    params = ", ".join(f"{p.name}: {clean(p.annotation)}" for p in sig.parameters.values())
    return f"def {name}({params}) -> {clean(sig.return_annotation)}"


def test_hook_reference_is_generated_from_the_current_specs():
    assert HOOK_PAGE.read_text() == load_generator().render(), \
        "docs/hooks.md is out of date; run: python3 docs/mkdocs/hook_reference.py"


@pytest.mark.parametrize("name", spec_names())
def test_every_hook_spec_is_in_the_reference_with_its_signature(name):
    page = HOOK_PAGE.read_text()
    section = page.split(f"\n### {name}\n", 1)
    assert len(section) == 2, f"no '### {name}' section in docs/hooks.md"
    body = section[1].split("\n### ", 1)[0]
    assert expected_signature(name) in body
    first = getattr(hookspecs, name).advcore_spec["firstresult"]
    assert ("@hookspec  # firstresult" in body) == first
    first_line = inspect.getdoc(getattr(hookspecs, name)).splitlines()[0].replace("``", "`")
    assert first_line in body


def test_the_reference_lists_exactly_the_specs():
    page = HOOK_PAGE.read_text()
    assert re.findall(r"^### (advcore_\w+)$", page, re.M) == spec_names()


def builtin_plugins():
    """Installed plugins whose module lives under this repository's plugins/ folder."""
    found = {}
    for name, plugin in installed_plugins().items():
        module = plugin.load()
        if (REPO / "plugins") in Path(module.__file__).resolve().parents:
            found[name] = plugin
    return found


def test_the_built_in_plugins_are_found():
    assert {"standard", "pgd-at", "trades", "mart", "alp", "pgd", "fgsm-rs", "free"} <= set(builtin_plugins())


@pytest.mark.parametrize("name", sorted(builtin_plugins()))
def test_every_built_in_plugin_has_a_method_page_naming_its_options(name):
    page = DOCS / "methods" / f"{name}.md"
    assert page.is_file(), f"plugin '{name}' has no docs/methods/{name}.md"
    text = page.read_text()
    assert text.startswith("# "), f"docs/methods/{name}.md must start with a '# ' title"
    options = builtin_plugins()[name].info.options
    for option in (options.model_fields if options is not None else {}):
        assert f"`{option}`" in text or f"| {option} |" in text, \
            f"docs/methods/{name}.md does not document option '{option}'"


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")
                                        if "mkdocs" not in p.relative_to(DOCS).parts))
def test_relative_links_point_to_existing_pages(page):
    source = DOCS / page
    text = re.sub(r"```.*?```", "", source.read_text(), flags=re.S)  # links inside code blocks are not links
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        path = (source.parent / target.split("#", 1)[0]).resolve()
        assert path.exists(), f"docs/{page} links to {target}, which does not exist"


def test_site_config_lists_pages_that_exist_or_are_generated():
    config = (DOCS / "mkdocs" / "mkdocs.yml").read_text()
    nav = re.findall(r"^  - [^:]+: (\S+\.md)$", config, re.M)
    assert "hooks.md" in nav and "writing-plugins.md" in nav and "getting-started.md" in nav
    missing = [p for p in nav if not (DOCS / p).is_file()]
    assert not missing, f"docs/mkdocs/mkdocs.yml lists pages that do not exist yet: {missing}"
