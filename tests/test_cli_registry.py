"""The command registry: every command, the built-in ones too, comes from an ``advcore.commands``
entry point (a ``register(app)`` function), built-ins first in a stable order, and another
package cannot replace a built-in (docs/writing-plugins.md, docs/architecture.md)."""

import re
from importlib.metadata import entry_points
from pathlib import Path

from cli_exe import advcore

from advcore.cli.app import ORDER, app
from advcore.testing import run_cli

HELP_ORDER = ["train", "recipes", "eval", "report", "margin", "plugins", "plan", "new-plugin", "export", "plot",
              "analyze"]
REPLACING = Path(__file__).parent / "fixtures" / "replacing"


def listed(help_text: str) -> list[str]:
    """The command names of a rich ``--help`` screen, in order."""
    return re.findall(r"^│ ([a-z][a-z-]*) ", help_text.split("Commands")[1], flags=re.M)


def test_the_built_in_commands_are_the_cores_advcore_commands_entry_points_in_help_order():
    core = {ep.name: ep.value for ep in entry_points(group="advcore.commands") if ep.dist.name == "advcore"}
    assert sorted(core) == sorted(ORDER)
    assert all(value.startswith("advcore.cli.commands.") and value.endswith(":register") for value in core.values())
    proc = advcore("--help")
    assert proc.returncode == 0 and listed(proc.stdout) == HELP_ORDER


def test_the_imported_app_has_every_command_and_defines_none_itself():
    modules = {c.callback.__module__ for c in app.registered_commands}
    assert modules == {f"advcore.cli.commands.{m}" for m in ("train", "evaluate", "plugins", "export")}
    assert [g.name for g in app.registered_groups] == ["plot", "analyze"]
    result = run_cli(["analyze", "--help"])  # plugins' analyses join the group without a special call
    assert result.exit_code == 0 and "gap" in result.output and "difficulty" in result.output


def test_another_package_cannot_replace_a_built_in_command_and_a_failing_one_is_skipped_in_one_line():
    env = {"PYTHONPATH": str(REPLACING)}
    proc = advcore("train", "--help", env=env)
    assert proc.returncode == 0 and "Train a model with the given plugins" in proc.stdout
    warnings = proc.stderr.strip().splitlines()
    assert warnings[0] == ("warning: commands from advcore-test-replacing (advcore_test_replacing:broken) could not "
                           "be added (RuntimeError: no config for half); fix or uninstall that package")
    assert warnings[1:] == [f"warning: advcore-test-replacing (advcore_test_replacing:register) would replace the "
                        f"built-in command 'advcore {name}' and it was not added; rename that package's command"
                        for name in ("train", "plot")]
    assert "Figures (PNG + JSON" in advcore("plot", "--help", env=env).stdout
    greet = advcore("greet", env=env)  # what does not collide is added
    assert greet.returncode == 0 and greet.stdout == "greetings\n"
    assert listed(advcore("--help", env=env).stdout) == [*HELP_ORDER[:9], "greet", *HELP_ORDER[9:]]  # not "half"
