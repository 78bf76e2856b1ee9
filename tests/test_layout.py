"""The core's layering: imports go one way (kernel at the bottom), with no cycle, and every module says its job.

Reads ``core/advcore`` with ``ast`` (nothing is imported). A module's concern is its subpackage
(``advcore.kernel.step`` -> kernel) or, for a module still at the top level, the concern named
in ``FLAT`` for it, so the same rules hold before and after the modules move into subpackages.
An import counts wherever it is written (module level or inside a function); imports under
``if TYPE_CHECKING:`` never run and are left out.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "core" / "advcore"

# concern -> rank; a module may import its own concern and any concern of lower rank.
RANK = {
    "foundation": 0,  # leaf helpers every layer uses: errors, attack primitives, loss helpers, progress bars
    "kernel": 1,      # hook specs, Step/Run records, config, per-sample state, plugin discovery and composition
    "data": 2,        # datasets, loaders, subsets, extra-data mixing
    "models": 2,      # architectures and model files
    "runtime": 3,     # checkpoints, distributed, speed, weight averaging, TensorBoard
    "engine": 4,      # the training loop and run building
    "evaluation": 5,  # evaluation attacks, AutoAttack, checks, corruptions, margins
    "analyses": 6,    # analyses of finished runs, plots, sweeps
    "kit": 7,         # the plugin kit: conformance checks, the package scaffold
    "cli": 8,         # the command line and the paper recipes
    "facade": 9,      # public entry points kept at their paths: advcore, advcore.testing, advcore.api
}
FLAT = {
    **dict.fromkeys(["errors", "attacks", "losses", "progress", "factories"], "foundation"),
    **dict.fromkeys(["config", "state", "step", "run", "hookspecs", "plugins", "core_plugin", "weights"], "kernel"),
    **dict.fromkeys(["data", "mixing", "subsets", "user_data"], "data"),
    **dict.fromkeys(["models", "model_files"], "models"),
    **dict.fromkeys(["checkpoint", "distributed", "speed", "ema", "tensorboard_log", "resume", "runlock"], "runtime"),
    **dict.fromkeys(["trainer"], "engine"),
    **dict.fromkeys(["evaluate", "eval_attacks", "autoattack_runner", "eval_checks", "corruptions", "margin", "export"],
                    "evaluation"),
    **dict.fromkeys(["analyze", "plots", "sweeps"], "analyses"),
    **dict.fromkeys(["conformance", "scaffold"], "kit"),
    **dict.fromkeys(["cli", "recipes"], "cli"),
    **dict.fromkeys(["__init__", "__main__", "testing", "api"], "facade"),
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ("advcore",) + path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def concern(name: str) -> str | None:
    parts = name.split(".")
    if MODULES[name].parent != PACKAGE:  # inside a subpackage: the subpackage is the concern
        return parts[1]
    return FLAT.get("__init__" if name == "advcore" else parts[1])


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _import_nodes(tree: ast.AST):
    stack = [tree]
    while stack:
        node = stack.pop()
        if _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imports_of(name: str) -> set[str]:
    """The advcore modules ``name`` imports (a package's ``__init__`` for names imported from it)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            bases = [a.name for a in node.names]
            out.update(b for b in bases if b in MODULES)
            continue
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            base = ".".join(anchor + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        if not (base == "advcore" or base.startswith("advcore.")):
            continue
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            out.add(sub if sub in MODULES else base)
    out.discard(name)
    return {m for m in out if m in MODULES}


GRAPH = {name: imports_of(name) for name in MODULES}


def test_every_module_has_a_layer():
    unplaced = [n for n in MODULES if concern(n) not in RANK]
    assert not unplaced, (f"{unplaced} belong to no layer: move each into the subpackage of its concern "
                          f"({', '.join(RANK)}) or name it in tests/test_layout.py FLAT")


def test_imports_only_go_down():
    upward = [f"{a} ({concern(a)}) imports {b} ({concern(b)})" for a, deps in GRAPH.items() for b in sorted(deps)
              if concern(a) in RANK and concern(b) in RANK and concern(a) != concern(b)
              and RANK[concern(b)] >= RANK[concern(a)]]
    assert not upward, "imports must go to a lower layer:\n" + "\n".join(upward)


def test_no_import_cycle():
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                cycles.append(sorted(part))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_has_a_docstring_naming_its_job(name):
    doc = ast.get_docstring(ast.parse(MODULES[name].read_text()))
    assert doc and len(doc.split()) >= 4, f"{MODULES[name]} needs a module docstring saying what it is for"


def test_every_subpackage_says_what_it_owns_and_may_import():
    for name, path in MODULES.items():
        if path.name == "__init__.py" and path.parent != PACKAGE:
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            assert "may import" in " ".join(doc.split()), f"{path}: say what the subpackage owns and what it may import"


def test_the_checker_sees_what_it_checks():
    """The graph is real: known edges are found and a TYPE_CHECKING-only import is not."""
    by_tail = {n.rsplit(".", 1)[-1]: n for n in MODULES}
    assert by_tail["plugins"] in GRAPH[by_tail["run"]]  # run.py imports Hooks from plugins
    assert any(concern(d) == "engine" for d in GRAPH[by_tail["evaluate"]])  # rebuilds a model the engine's way
    assert not any(concern(d) == "data" for d in GRAPH[by_tail["run"]])  # Dataset only under TYPE_CHECKING
