"""The ``advcore`` executable: the typer app, its root options, the command registry and exit codes.

Every command, the built-in ones included, is added by a ``register(app)`` function named by
an entry point of the group ``advcore.commands`` (as llm's ``register_commands`` does): the
core's own are declared in its pyproject.toml and live in ``advcore.cli.commands``, one module
per concern. ``register_commands`` adds the built-ins first, in the order of ``ORDER``, then
those of other packages, which may not replace a built-in. Nothing here
imports torch: the commands import it inside their bodies, when they need it.
"""

from __future__ import annotations

import os
import sys
from typing import List, Optional

import typer

from ..errors import AdvcoreError

CORE = "advcore"
"""The distribution whose ``advcore.commands`` entry points are the built-in commands."""
ORDER = ("train", "evaluate", "plugins", "export", "plot", "analyze")
"""The built-in entry points in the order ``advcore --help`` lists their commands (setuptools
writes a package's entry points sorted by name, so the declared order is not kept)."""

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Adversarial training whose methods are plugins.")


def _name(info) -> str | None:
    """The name a registered command or group has on the command line (as typer derives it)."""
    from typer.main import get_command_name, solve_typer_info_defaults

    if isinstance(info, typer.models.TyperInfo):
        return solve_typer_info_defaults(info).name
    return info.name or get_command_name(info.callback.__name__)


def _package(ep) -> str:
    """The distribution and function behind an entry point, for a warning."""
    return f"{ep.dist.name} ({ep.value})" if ep.dist is not None else ep.value


def register_commands(target: typer.Typer) -> None:
    """Add the commands of installed packages: entry points in the ``advcore.commands`` group.

    Each entry point names a function ``register(app)`` that adds commands to the typer app.
    The core's own (distribution ``advcore``) come first, in the order of ``ORDER``; then the
    others, sorted by package and name so the order does not depend on sys.path. A command of
    another package whose name is a built-in's is removed again with a one-line warning. This
    runs on every ``advcore`` call, so a ``register`` module must not import torch at module
    level. A package that fails to register is reported in one line and skipped.
    """
    from importlib.metadata import entry_points

    found = list(entry_points(group="advcore.commands"))
    core = sorted((ep for ep in found if ep.dist is not None and ep.dist.name == CORE),
                  key=lambda ep: (ORDER.index(ep.name) if ep.name in ORDER else len(ORDER), ep.name))
    others = sorted((ep for ep in found if ep not in core), key=lambda ep: (ep.dist.name if ep.dist else "", ep.name))
    if not core:
        typer.echo("warning: advcore's own commands are not registered (no package metadata); install it: "
                   "pip install -e . in the checkout", err=True)
    builtins: set[str] = set()
    for ep in [*core, *others]:
        commands, groups = len(target.registered_commands), len(target.registered_groups)
        try:
            ep.load()(target)
        except Exception as exc:  # noqa: BLE001 - a broken third-party package must not break advcore
            typer.echo(f"warning: commands from {_package(ep)} could not be added ({type(exc).__name__}: {exc}); "
                       f"fix or uninstall that package", err=True)
            del target.registered_commands[commands:], target.registered_groups[groups:]
            continue
        if ep in core:
            builtins.update(_name(info) for info in [*target.registered_commands, *target.registered_groups])
            continue
        for added, start in ((target.registered_commands, commands), (target.registered_groups, groups)):
            for info in list(added[start:]):
                if _name(info) in builtins:
                    added.remove(info)
                    typer.echo(f"warning: {_package(ep)} would replace the built-in command 'advcore {_name(info)}' "
                               f"and it was not added; rename that package's command", err=True)


register_commands(app)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"advcore {version('advcore')}")
        except PackageNotFoundError:  # a source tree that was never installed
            typer.echo("advcore (not installed: no version)")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                       help="print the version and exit")) -> None:
    """Adversarial training whose methods are plugins."""


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point with the documented exit codes (docs/errors.md#exit-codes).

    0 ok, 1 a problem the user can fix (one line ``error: ...``), 2 a usage error (click's
    usage message), 3 a flagged evaluation, 130 interrupted. Click runs in non-standalone
    mode so that AdvcoreError reaches us; its exceptions are typer's vendored click
    (``typer._click``), not the ``click`` package. ADVCORE_RAISE_ERRORS=1 re-raises.
    """
    from typer._click import exceptions as cx

    try:
        code = app(args=argv, standalone_mode=False, prog_name="advcore")
    except AdvcoreError as exc:
        if os.environ.get("ADVCORE_RAISE_ERRORS") == "1":
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except cx.ClickException as exc:  # usage errors, bad parameters: exit 2
        exc.show()
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):  # typer's own classes, not typer._click's
        typer.echo("error: interrupted", err=True)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except BrokenPipeError:  # `advcore plugins | head`
        sys.exit(0)
    except Exception as exc:  # a bug, not bad input: still one line, and how to get the details
        if os.environ.get("ADVCORE_RAISE_ERRORS") == "1":
            raise
        detail = str(exc).splitlines()[0] if str(exc) else ""
        typer.echo(f"error: internal error {type(exc).__name__}: {detail}; rerun with ADVCORE_RAISE_ERRORS=1 for "
                   f"the traceback and report it", err=True)
        sys.exit(1)
    if code == 130:  # typer turned a KeyboardInterrupt (a second Ctrl-C) into this code
        typer.echo("error: interrupted at once by a second signal; the last complete checkpoint was kept", err=True)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
