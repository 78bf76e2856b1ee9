"""``advcore new-plugin NAME``: write an installable plugin package that passes the conformance kit.

The package has the layout of the built-in plugins (each is its own distribution): a
pyproject with the ``advcore.plugins`` entry point, a module with an options model and
hook stubs whose docstrings say what to fill in, a README, and tests that call
``advcore.testing.check_plugin``.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import AdvcoreError, PluginError
from .plugins import installed_plugins

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

MODULE = '''\
"""{name}: say in one line what the method does and which paper it comes from.

An advcore plugin. advcore finds it through the entry point in pyproject.toml and, for
every batch, calls the hooks below in this order: select_samples -> (the objective's
attack) -> derive_examples -> adapt_targets -> loss_terms and sample_weights (inside the
update) -> after_step. Fill in the hooks your method needs and delete the others;
``advcore plan --plugin {name}`` shows where each one runs, and the hook reference in
advcore's docs gives every hook's contract.
"""

from pydantic import Field

from advcore import PluginInfo, PluginOptions, hookimpl

NAME = "{name}"


class Options(PluginOptions):
    """Options users set with ``--set options.{name}.<field>=<value>``; every field needs a default."""

    weight: float = Field(1.0, ge=0, description="weight of the example loss term (replace with your options)")


@hookimpl
def advcore_plugin_info():
    """Declare the plugin: a one-line summary, its options model and its roles.

    Add ``roles=("objective",)`` for a training objective (it replaces pgd-at) or
    ``roles=("adversary",)`` for a base adversary (it replaces pgd); with no roles the
    plugin is an add-on that composes with every objective and adversary.
    """
    return PluginInfo(summary="{name}: describe the method in one line", options=Options)


@hookimpl
def advcore_select_samples(run, step):
    """Per-sample budgets and groups, decided before any example is generated.

    Fill in: set ``step.eps`` / ``step.step_size`` (tensors [B]) to give samples their own
    budget, and add boolean masks [B] to ``step.groups``. Leave them to keep the run's eps.
    """


@hookimpl
def advcore_derive_examples(run, step):
    """Examples derived from the adversarial one; ``step.examples["attack"]`` is read-only.

    Fill in: add inputs as ``step.examples["<name>"]`` (shaped like ``step.x``) or replace
    rows of ``step.examples["adv"]``, staying inside ``step.eps`` and [0, 1].
    """


@hookimpl
def advcore_adapt_targets(run, step):
    """What each example is trained towards.

    Fill in: ``step.targets[name] = `` labels [B] or soft targets [B, K] (rows summing to 1).
    """


@hookimpl
def advcore_loss_terms(run, step):
    """This plugin's per-sample loss terms: a list of ``step.term(name, values [B], weight)``.

    Replace the example (weight * CE on the clean inputs) with your method's terms.
    ``step.supervised_loss(name)`` is the per-sample CE of ``step.examples[name]`` against
    its target; ``step.logits(name)`` a cached training-mode forward. Return [] for none.
    """
    return [step.term(f"{{NAME}}.clean_ce", step.supervised_loss("clean"), weight=run.options[NAME].weight)]


@hookimpl
def advcore_sample_weights(run, step):
    """Fill in: non-negative per-sample weights [B] applied to every loss term, or None."""
    return None


@hookimpl
def advcore_after_step(run, step):
    """Update per-sample state after the optimizer step.

    Fill in: keep it in ``run.state`` (``run.state.tensor(f"{{NAME}}.score")[step.index] = ...``);
    it is saved in checkpoints and restored on resume without further code.
    """


@hookimpl
def advcore_state_dict(run):
    """Fill in: state that is not per-sample, as ``{{NAME: {{"tensors": {{...}}, "json": {{...}}}}}}``, or None."""
    return None


@hookimpl
def advcore_load_state_dict(run, state):
    """Fill in: restore what ``advcore_state_dict`` returned (``state[NAME]["tensors"]``, ``["json"]``)."""
'''

TESTS = '''\
"""Tests of the {name} plugin: advcore's conformance kit, then the method's own behaviour."""

from advcore.testing import check_plugin, tiny_batch, tiny_run
from advcore.trainer import train_step


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


def package_files(name: str) -> dict[str, str]:
    """The files of the package for plugin ``name``, by relative path."""
    module = name.replace("-", "_")
    fill = {"name": name, "module": module}
    return {
        "pyproject.toml": PYPROJECT.format(**fill),
        f"advcore_{module}/__init__.py": MODULE.format(**fill),
        f"tests/test_{module}.py": TESTS.format(**fill),
        "README.md": README.format(**fill),
    }


def new_plugin(name: str, directory: str | Path = ".") -> Path:
    """Write ``<directory>/advcore-<name>/`` and return its path."""
    if not NAME_PATTERN.match(name):
        raise AdvcoreError(f"plugin name {name!r} is not allowed; use lowercase letters, digits and single "
                           f"hyphens, starting with a letter (e.g. my-method)")
    installed = installed_plugins()
    if name in installed:
        raise PluginError(f"a plugin named '{name}' is already installed (package {installed[name].package}); "
                          f"choose another name")
    root = Path(directory) / f"advcore-{name}"
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise AdvcoreError(f"{root} already exists and is not empty; choose another --dir or remove it")
    for relative, text in package_files(name).items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root
