"""Write docs/api.md, the public plugin API, from the code's own docstrings.

    python3 docs/mkdocs/api_reference.py          # rewrite docs/api.md
    python3 docs/mkdocs/api_reference.py --check  # exit 1 if docs/api.md is out of date

The public API is exactly what this page lists: the names ``advcore`` exports and the
``__all__`` of the public modules below. tests/test_public_api.py fails when a file under
plugins/ imports anything else, when a listed field has no docstring, or when this page is
stale, so the page a plugin author reads in the repository is always the real surface.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
import sys
import textwrap
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "api.md"
PUBLIC_MODULES = ("advcore.attacks", "advcore.losses", "advcore.errors", "advcore.testing")
"""Modules whose ``__all__`` is public, besides the ``advcore`` package itself."""


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("\n", " ").replace("|", "\\|")


def type_name(annotation) -> str:
    """A readable, run-independent name of a type annotation (no addresses, no Annotated metadata)."""
    import types
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is typing.Literal:
        return "Literal[" + ", ".join(repr(a) for a in args) + "]"
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_name(a) for a in args)}]"
    if annotation is type(None):
        return "None"
    if inspect.isclass(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def md(text: str | None) -> str:
    text = inspect.cleandoc(text or "")
    text = re.sub(r"``([^`]+)``", r"`\1`", text)
    return text.replace("::\n", ":\n")


def field_docs(cls: type) -> dict[str, str]:
    """The string literal written under each class attribute (PEP 257 attribute docstrings)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body
    docs = {}
    for node, after in zip(body, body[1:] + [None]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str):
                docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def public_fields(obj) -> list[tuple[str, str, str]]:
    """(name, type, doc) for the public fields of a dataclass or pydantic model."""
    rows = []
    if dataclasses.is_dataclass(obj):
        docs = field_docs(obj)
        for f in dataclasses.fields(obj):
            if not f.name.startswith("_"):
                rows.append((f.name, str(f.type), docs.get(f.name, "")))
    elif hasattr(obj, "model_fields"):
        for name, f in obj.model_fields.items():
            rows.append((name, type_name(f.annotation), f.description or ""))
    return rows


def config_rows(model, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) for every key of RunConfig, sections flattened."""
    rows = []
    for name, f in model.model_fields.items():
        annotation = f.annotation
        if inspect.isclass(annotation) and hasattr(annotation, "model_fields") and name != "recipe":
            rows += config_rows(annotation, f"{prefix}{name}.")
            continue
        default = "(required)" if f.is_required() else repr(f.get_default(call_default_factory=True))
        kind = type_name(annotation)
        rows.append((prefix + name, kind, default, f.description or ""))
    return rows


def methods(cls) -> list[tuple[str, str]]:
    out = []
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        fn = member.fget if isinstance(member, property) else member
        if callable(fn) and getattr(fn, "__doc__", None):
            try:
                sig = "" if isinstance(member, property) else str(inspect.signature(fn)).replace("(self, ", "(").replace("(self)", "()")
            except (TypeError, ValueError):
                sig = ""
            out.append((f"{name}{sig}", md(fn.__doc__)))
    return out


def describe(qualname: str, obj) -> list[str]:
    lines = [f"### `{qualname}`", ""]
    if inspect.isclass(obj):
        lines += [md(obj.__doc__), ""]
        fields = public_fields(obj)
        if qualname == "advcore.RunConfig":
            lines += ["Its keys are listed under [Every `RunConfig` key](#every-runconfig-key).", ""]
        elif fields:
            lines += ["| field | type | meaning |", "|---|---|---|"]
            lines += [f"| `{n}` | `{cell(t)}` | {cell(md(d))} |" for n, t, d in fields]
            lines.append("")
        for sig, doc in methods(obj):
            lines += [f"- `{sig}`: {doc.replace(chr(10), ' ')}"]
        if methods(obj):
            lines.append("")
    elif callable(obj):
        try:
            sig = str(inspect.signature(obj))
        except (TypeError, ValueError):
            sig = "(...)"
        lines += ["```python", f"{qualname.rsplit('.', 1)[-1]}{sig}", "```", "", md(obj.__doc__), ""]
    else:
        lines += [f"`{obj!r}`", ""]
    return lines


def public_names() -> dict[str, list[str]]:
    """Module -> public names (``advcore`` first)."""
    import advcore

    names = {"advcore": [n for n in advcore.__all__ if n != "__version__"]}
    for module in PUBLIC_MODULES:
        names[module] = list(importlib.import_module(module).__all__)
    return names


def render() -> str:
    import advcore
    from advcore.kernel.config import RunConfig

    parts = ["# Public plugin API", "",
             "<!-- Generated from the code by `python3 docs/mkdocs/api_reference.py`; do not edit by hand. -->", "",
             md(advcore.__doc__), "",
             "Everything below is public and stable; nothing else is (tests/test_public_api.py fails when a file "
             "under plugins/ imports another name). The hooks are in the [hook reference](hooks.md).", "",
             "**Naming rule** (checked while training): a plugin keeps its runtime objects in "
             "`run.stash[its name]`, and every per-sample state tensor, step record, epoch metric and checkpoint "
             "entry it adds is named `\"<plugin>.<what>\"` (e.g. `fast-atta.delta`, `awp.proxy_loss`).", ""]
    for module, names in public_names().items():
        mod = importlib.import_module(module)
        parts += [f"## `{module}`", "", md(mod.__doc__).split("\n\n")[0], ""]
        for name in names:
            parts += describe(f"{module}.{name}", getattr(mod, name))
    parts += ["## Every `RunConfig` key", "",
              "`run.config` is a validated `RunConfig`; every key below can be set with `--set key=value` or in "
              "a TOML/YAML file.", "", "| key | type | default | meaning |", "|---|---|---|---|"]
    for key, kind, default, doc in config_rows(RunConfig):
        parts.append(f"| `{key}` | `{cell(kind)}` | `{cell(default)}` | {cell(doc)} |")
    text = "\n".join(parts).rstrip() + "\n"
    return re.sub(r"\n{3,}", "\n\n", text)


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from hook_reference import write_or_check

    return write_or_check(PAGE, render(), argv, "api_reference.py")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
