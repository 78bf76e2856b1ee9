"""``advcore new-plugin NAME``: write an installable plugin package that passes the conformance kit.

The package has the layout of the built-in plugins (each is its own distribution): a
pyproject with the ``advcore.plugins`` entry point, a module with an options model and
hook stubs whose docstrings say what to fill in, a README, and tests that call
``advcore.testing.check_plugin``.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from ..errors import AdvcoreError, PluginError
from ..kernel.plugins import installed_plugins

__all__ = ["new_plugin", "package_files"]

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "advcore-{name}"
version = "0.1.0"
description = "{name}: an advcore plugin"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["advcore"]

# advcore finds the plugin through this entry point; its name is the --plugin name.
[project.entry-points."advcore.plugins"]
{name} = "advcore_{module}"

[tool.setuptools]
packages = ["advcore_{module}"]
'''

HEADER = '''\
"""{name}: say in one line what the method does and which paper it comes from.

An advcore plugin. advcore finds it through the entry point in pyproject.toml and calls
its hooks in the canonical order (``advcore plan --plugin {name}`` shows it). There is a
stub for every hook: collect-all hooks are active no-ops; hooks that only the owner of a
role answers are commented out unless this plugin claims that role. Fill in what your
method needs and delete the rest; docs/hooks.md in advcore gives each hook's contract.
"""

from pydantic import Field

from advcore import AttackObjective, PluginInfo, PluginOptions, hookimpl
from advcore.attacks import ce_loss, pgd

NAME = "{name}"


class Options(PluginOptions):
    """Options users set with ``--set options.{name}.<field>=<value>``; every field needs a default."""

    weight: float = Field(1.0, ge=0, description="weight of the example loss term (replace with your options)")


@hookimpl
def advcore_plugin_info():
    """Declare the plugin: a one-line summary, its options model, its roles and its place.

    Fill in: ``roles=("objective",)`` makes it a training objective (it replaces pgd-at),
    ``roles=("adversary",)`` a base adversary (it replaces pgd); with no roles it is an
    add-on that composes with every objective and adversary. ``order`` (default 0) is its
    place in every hook call: lower runs first, equal orders by name.
    """
    return PluginInfo(summary="{name}: describe the method in one line", options=Options{roles})
'''

# What to fill in, per hook; the rest of each stub's docstring comes from the hook contract.
FILL_IN = {
    "advcore_configure_model": ("model", "Fill in: change the model in place before the optimizer exists (e.g. "
                                "swap ``model.head``) and record it in ``model.advcore_head``.", ""),
    "advcore_data_views": ("run", "Fill in: how many augmented views of every sample you need (1 = the usual).",
                           "return 1"),
    "advcore_training_subset": ("config, options, dataset, kind, n", "Fill in: for ``data.subset = \"KIND:N\"`` "
                                "with a KIND of yours, the sorted indices of N samples (``advcore.ranked_subset`` "
                                "builds a class-balanced pick from scores); None for other kinds.", "return None"),
    "advcore_on_run_start": ("run", "Fill in: create per-sample state (``run.state.tensor(f\"{NAME}.score\")``) "
                             "or objects in ``run.stash[NAME]``.", ""),
    "advcore_on_run_end": ("run, metrics", "Fill in: react to the end of training (``metrics`` is the last "
                           "epoch's record).", ""),
    "advcore_on_epoch_start": ("run, epoch", "Fill in: per-epoch preparation (``epoch`` is 0-based).", ""),
    "advcore_on_epoch_end": ("run, epoch, metrics", "Fill in: add ``metrics[f\"{NAME}.<what>\"] = value`` "
                             "(JSON numbers).", ""),
    "advcore_select_samples": ("run, step", "Fill in: set ``step.eps`` / ``step.step_size`` (tensors [B]) to give "
                               "samples their own budget, and add boolean masks [B] to ``step.groups``.", ""),
    "advcore_attack_objective": ("run, step", "Fill in: the inner loss the adversary maximises "
                                 "(``AttackObjective``); None trains without adversarial examples.",
                                 "return AttackObjective(name=NAME, loss=ce_loss, init=\"uniform\", mode=\"eval\")"),
    "advcore_generate_adversarial": ("run, step, objective", "Fill in: the adversarial batch, inside ``step.eps`` "
                                     "(in ``run.norm``) and [0, 1]; the model is already in ``objective.mode``.",
                                     "target = objective.target(step.model, step.x, step.y)\n"
                                     "    return pgd(step.model, step.x, target, objective.loss, eps=step.eps,\n"
                                     "               step_size=step.step_size, steps=step.steps, init=objective.init,\n"
                                     "               norm=run.norm)"),
    "advcore_attack_step": ("run, step, attack", "Fill in: look inside the adversary's PGD (``attack.index``, "
                            "``attack.logits``, ``attack.correct``, ``attack.active``); return a bool mask [B] of "
                            "samples to stop now, or None.", "return None"),
    "advcore_derive_examples": ("run, step", "Fill in: add inputs as ``step.examples[\"<name>\"]`` (shaped like "
                                "``step.x``) or replace rows of ``step.examples[\"adv\"]``, staying inside "
                                "``step.eps`` and [0, 1]; ``step.examples[\"attack\"]`` is read-only.", ""),
    "advcore_adapt_targets": ("run, step", "Fill in: ``step.targets[name] = `` labels [B] or soft targets [B, K] "
                              "(rows summing to 1).", ""),
    "advcore_loss_terms": ("run, step", "Replace the example (weight * CE on the clean inputs) with your method's "
                           "terms: a list of ``step.term(name, values [B], weight)``. ``step.supervised_loss(name)`` "
                           "is the per-sample CE of ``step.examples[name]``; ``step.logits(name)`` a cached forward.",
                           "return [step.term(f\"{NAME}.clean_ce\", step.supervised_loss(\"clean\"), "
                           "weight=run.options[NAME].weight)]"),
    "advcore_adjust_logits": ("run, step, logits, target", "Fill in: the logits a supervised training term sees "
                              "(a head's margin), or None.", "return None"),
    "advcore_sample_weights": ("run, step", "Fill in: non-negative per-sample weights [B] for the loss terms, or "
                               "None.", "return None"),
    "advcore_update": ("run, step", "Fill in: code around the core's update (e.g. perturb the weights before "
                       "``yield``, undo it after); this is a wrapper.", "return (yield)"),
    "advcore_observe_loss": ("run, step", "Fill in: read ``step.terms`` / ``step.loss`` / ``step.logits(name)`` "
                             "of the real update (e.g. loss histories) without changing them.", ""),
    "advcore_after_step": ("run, step", "Fill in: update per-sample state in ``run.state`` rows ``step.index``; it "
                           "is saved in checkpoints and restored on resume without further code.", ""),
    "advcore_state_dict": ("run", "Fill in: state that is not per-sample, as "
                           "``{NAME: {\"tensors\": {...}, \"json\": {...}}}``, or None.", "return None"),
    "advcore_load_state_dict": ("run, state", "Fill in: restore what ``advcore_state_dict`` returned "
                                "(``state[NAME][\"tensors\"]``, ``[\"json\"]``).", ""),
}
ROLE_HOOKS = {"advcore_attack_objective": "objective", "advcore_generate_adversarial": "adversary",
              "advcore_adjust_logits": "head"}
"""First-result hooks: only the plugin owning the role answers them (two answers are refused)."""


def hook_stub(contract, role: str | None) -> str:
    """One hook's stub: active, or commented out when only a role's owner may answer it."""
    args, fill, body = FILL_IN[contract.name]
    owner = ROLE_HOOKS.get(contract.name)
    decorator = "@hookimpl(wrapper=True)" if contract.name == "advcore_update" else "@hookimpl"
    wrap = lambda text: textwrap.fill(text, 100, initial_indent="    ", subsequent_indent="    ")  # noqa: E731
    quotes = '"' * 3
    doc = wrap(f"{quotes}Called {contract.when}. May change: {contract.may_change}.") + "\n\n" + wrap(fill) \
        + "\n    " + quotes
    lines = [decorator, f"def {contract.name}({args}):", doc]
    if body:
        lines.append("    " + body)
    text = "\n".join(lines)
    active = (owner is None and contract.name != "advcore_update") or (owner is not None and owner == role)
    if active:
        return text
    why = (f"only the plugin claiming the {owner!r} role answers this hook: add the role, then uncomment"
           if owner else "a wrapper around the core's update (AWP-style): uncomment to use it")
    return f"# {why}\n" + "\n".join("# " + line if line else "#" for line in text.splitlines())


def module_source(role: str | None) -> str:
    from ..kernel.hookspecs import CONTRACT

    roles = f", roles=({role!r},)" if role else ""
    stubs = [hook_stub(c, role) for c in CONTRACT if c.name != "advcore_plugin_info"]
    return HEADER.replace("{roles}", roles) + "\n\n" + "\n\n\n".join(stubs) + "\n"


TESTS = '''\
"""Tests of the {name} plugin: advcore's conformance kit, then the method's own behaviour."""

from advcore.testing import check_plugin, tiny_batch, tiny_run, train_step


def test_{module}_passes_the_conformance_kit():
    """Every hook contract on a tiny model, with each built-in objective and adversary."""
    check_plugin("{name}")


def test_{module}_adds_its_weighted_loss_term():
    """Replace with tests that check your formula against an independent computation."""
    run = tiny_run(["{name}"], {{"{name}": {{"weight": 0.5}}}})
    step = train_step(run, tiny_batch(run, 8), 0, 0)
    term = next(t for t in step.terms if t.name == "{name}.clean_ce")
    assert term.weight == 0.5 and term.values.shape == (8,)
'''

README = '''\
# advcore-{name}

An [advcore](https://pypi.org/project/advcore/) plugin: describe the method and cite its paper.

## Use

    pip install -e .
    advcore plugins                      # lists {name} with its hooks and options
    advcore train --plugin {name} --plugin pgd-at
    advcore plan --plugin {name}         # where each hook runs in a training step

Options (`--set options.{name}.<key>=<value>`):

| option | default | meaning |
|---|---|---|
| weight | 1.0 | weight of the example loss term |

## Develop

`advcore_{module}/__init__.py` holds the options model and one stub per hook; each
docstring says what to fill in. Delete the hooks you do not need.

    pytest tests

`tests/test_{module}.py` calls `advcore.testing.check_plugin("{name}")`, which runs every
hook contract on a tiny model and batch (examples inside the per-sample budget, state
that survives a checkpoint, same seed same step, composition with the built-in
objectives and adversaries) and names the hook of each problem.
'''


ROLES = ("objective", "adversary", "head")


def parse_plugin(spec: str) -> tuple[str, str | None]:
    """``name`` or ``name:role`` -> (name, role or None), refused in one line when malformed."""
    name, _, role = spec.partition(":")
    if not NAME_PATTERN.match(name):
        raise AdvcoreError(f"plugin name {name!r} is not allowed; use lowercase letters, digits and single "
                           f"hyphens, starting with a letter (e.g. my-method)")
    if role and role not in ROLES:
        raise AdvcoreError(f"role {role!r} of plugin '{name}' is not allowed; use one of {', '.join(ROLES)} "
                           f"(or none for an add-on)")
    return name, role or None


def package_files(name: str, also: list[str] | tuple[str, ...] = (), role: str | None = None) -> dict[str, str]:
    """The files of package ``advcore-<name>``: plugin ``name`` (with ``role``) and the ``also`` plugins
    ("name" or "name:role"), each a module with its own entry point, options, stubs and tests."""
    module = name.replace("-", "_")
    plugins = [(name, role)] + [parse_plugin(s) for s in also]
    single = len(plugins) == 1
    files: dict[str, str] = {}
    entry_points = []
    for plugin, plugin_role in plugins:
        sub = plugin.replace("-", "_")
        fill = {"name": plugin, "module": sub}
        path = f"advcore_{module}/__init__.py" if single else f"advcore_{module}/{sub}.py"
        files[path] = module_source(plugin_role).replace("{name}", plugin)
        files[f"tests/test_{sub}.py"] = TESTS.format(**fill)
        entry_points.append(f'{plugin} = "advcore_{module}"' if single else f'{plugin} = "advcore_{module}.{sub}"')
    if not single:
        files[f"advcore_{module}/__init__.py"] = (f'"""advcore-{name}: the plugins '
                                                  f'{", ".join(p for p, _ in plugins)}, one module each."""\n')
    pyproject = PYPROJECT.format(name=name, module=module)
    head, _, _ = pyproject.partition('[project.entry-points."advcore.plugins"]\n')
    files["pyproject.toml"] = (head + '[project.entry-points."advcore.plugins"]\n' + "\n".join(entry_points)
                               + f'\n\n[tool.setuptools]\npackages = ["advcore_{module}"]\n')
    files["README.md"] = README.format(name=name, module=module)
    return dict(sorted(files.items()))


def new_plugin(name: str, directory: str | Path = ".", also: list[str] | tuple[str, ...] = (),
               role: str | None = None) -> Path:
    """Write ``<directory>/advcore-<name>/`` (plugin ``name`` and the ``also`` plugins) and return its path."""
    names = [parse_plugin(name)[0]] + [parse_plugin(s)[0] for s in also]
    if role is not None:
        parse_plugin(f"{name}:{role}")
    if len(set(names)) != len(names):
        raise AdvcoreError(f"plugin names must differ: {', '.join(names)}")
    installed = installed_plugins()
    for plugin in names:
        if plugin in installed:
            raise PluginError(f"a plugin named '{plugin}' is already installed (package "
                              f"{installed[plugin].package}); choose another name")
    root = Path(directory) / f"advcore-{name}"
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise AdvcoreError(f"{root} already exists and is not empty; choose another --dir or remove it")
    for relative, text in package_files(name, also, role).items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root
