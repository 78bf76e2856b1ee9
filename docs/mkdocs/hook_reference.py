"""Write docs/hooks.md from core/advcore/kernel/hookspecs.py: every hook's signature and docstring, in call order.

    python3 docs/mkdocs/hook_reference.py          # rewrite docs/hooks.md
    python3 docs/mkdocs/hook_reference.py --check  # exit 1 if docs/hooks.md is out of date

The docs build (docs/mkdocs/hooks.py) and tests/test_docs.py run the check, so a changed
hook spec cannot ship with a stale reference.
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
import textwrap
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "hooks.md"
SECTION = re.compile(r"^# --- (.+?) -+$")


def _annotation(node: ast.expr | None) -> str:
    if node is None:
        return ""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return ast.unparse(node)


def signature(node: ast.FunctionDef) -> str:
    """``advcore_x(run: Run, step: Step) -> None`` as written in the spec (string annotations unquoted)."""
    args = [f"{a.arg}: {_annotation(a.annotation)}" if a.annotation else a.arg for a in node.args.args]
    returns = f" -> {_annotation(node.returns)}" if node.returns else ""
    return f"{node.name}({', '.join(args)}){returns}"


def markdown(docstring: str) -> str:
    """The spec docstrings' reST bits as Markdown: ``code`` -> `code`, ``Example::`` blocks -> fenced code."""
    lines = inspect.cleandoc(docstring).splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = re.sub(r"``([^`]+)``", r"`\1`", lines[i])
        if line.rstrip().endswith("::"):
            out.append(line.rstrip()[:-1])
            block: list[str] = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith("    ")):
                block.append(lines[i])
                i += 1
            out += ["", "```python", textwrap.dedent("\n".join(block)).strip("\n"), "```", ""]
            continue
        out.append(line)
        i += 1
    return "\n".join(out).strip()


def hooks(source: str) -> list[tuple[str, ast.FunctionDef]]:
    """(section, spec) for every ``@hookspec`` function, in source order."""
    sections = {}
    current = ""
    for number, line in enumerate(source.splitlines(), 1):
        match = SECTION.match(line)
        if match:
            current = match.group(1)
        sections[number] = current
    found = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and any("hookspec" in ast.unparse(d) for d in node.decorator_list):
            found.append((sections[node.lineno], node))
    return found


def render() -> str:
    import advcore.kernel.hookspecs as specs

    source = Path(specs.__file__).read_text()
    intro = markdown(specs.__doc__ or "")
    parts = [
        "# Hook reference",
        "",
        "<!-- Generated from core/advcore/kernel/hookspecs.py by `python3 docs/mkdocs/hook_reference.py`; "
        "do not edit by hand. -->",
        "",
        intro,
        "",
        "An implementation is a function decorated with `advcore.hookimpl` in the plugin's module; it "
        "declares only the arguments it uses (`def advcore_loss_terms(step): ...`). Collect-all hooks "
        "run every plugin's implementation; first-result hooks stop at the first non-None result. How a "
        "plugin is packaged and tested: [Writing a plugin](writing-plugins.md); what the conformance kit "
        "checks for each hook: [advcore.testing](api.md#advcoretesting).",
        "",
        "The table is `advcore.kernel.hookspecs.CONTRACT`, the one source of the contract: the specs' first-result "
        "flags, the facade's result checks, the conformance probe and this page are derived from it "
        "(tests/test_hook_contract.py). *Wrappable*: `@hookimpl(wrapper=True)` implementations may surround "
        "the others; a wrapper on any other hook is refused when the run is built.",
        "",
        "| hook | when it is called | what it may change | returns | results | wrappable |",
        "|---|---|---|---|---|---|",
    ]
    table, body, last_section = [], [], None
    for section, node in hooks(source):
        contract = specs.CONTRACTS[node.name]
        how = "first result wins" if contract.firstresult else "collect all"
        anchor = node.name  # Python-Markdown's slug of the heading below
        cells = [f"[`{node.name}`](#{anchor})", contract.when, contract.may_change, f"`{contract.result}`", how,
                 "yes" if contract.wrappable else "no"]
        table.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        if section != last_section:
            body += [f"## {section[0].upper()}{section[1:]}", ""]
            last_section = section
        decorator = "@hookspec  # firstresult" if contract.firstresult else "@hookspec"
        wrap = "may be wrapped" if contract.wrappable else "may not be wrapped"
        body += [f"### {node.name}", "", "```python", decorator, f"def {signature(node)}", "```", "",
                 f"*{how.capitalize()}; {wrap}. Called {contract.when}. May change: {contract.may_change}.*", "",
                 markdown(ast.get_docstring(node) or ""), ""]
    return "\n".join(parts + table + [""] + body).rstrip() + "\n"


def write_or_check(page: Path, text: str, argv: list[str], script: str) -> int:
    """Rewrite a generated page, or with ``--check`` exit 1 when it differs from ``text``."""
    if "--check" in argv:
        if not page.exists() or page.read_text() != text:
            print(f"{page} is out of date; run: python3 docs/mkdocs/{script}", file=sys.stderr)
            return 1
        return 0
    page.write_text(text)
    print(f"wrote {page}")
    return 0


def main(argv: list[str]) -> int:
    return write_or_check(PAGE, render(), argv, "hook_reference.py")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
