"""MkDocs hooks for the advcore site (see mkdocs.yml).

- fail the build when docs/hooks.md no longer matches core/advcore/kernel/hookspecs.py;
- fill the "Methods" section with every page in docs/methods/, titled by its first heading;
- add any page the nav does not list under "More", so no page is unreachable.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mkdocs.exceptions import PluginError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hook_reference  # noqa: E402


def title(page: Path) -> str:
    for line in page.read_text().splitlines():
        if line.startswith("# "):
            return line[2:].strip().replace("`", "")
    return page.stem


def _listed(nav) -> set[str]:
    found: set[str] = set()
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            found |= _listed(value)
        elif isinstance(value, str):
            found.add(value)
    return found


def on_config(config):
    if hook_reference.main(["--check"]) != 0:
        raise PluginError("docs/hooks.md is out of date with core/advcore/kernel/hookspecs.py; "
                          "run: python3 docs/mkdocs/hook_reference.py")
    docs = Path(config.docs_dir)
    methods = [{title(p): f"methods/{p.name}"} for p in sorted((docs / "methods").glob("*.md"))]
    nav = [{"Methods": methods} if isinstance(item, dict) and "Methods" in item else item for item in config.nav]
    listed = _listed(nav)
    pages = sorted(p.relative_to(docs).as_posix() for p in docs.rglob("*.md") if "mkdocs" not in p.relative_to(docs).parts)
    more = [{title(docs / p): p} for p in pages if p not in listed]
    config.nav = nav + ([{"More": more}] if more else [])
    return config
