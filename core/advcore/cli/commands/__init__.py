"""The built-in commands, one module per concern, each with a ``register(app)`` function.

They reach the ``advcore`` app the way a third-party package's commands do: as entry points
of the group ``advcore.commands``, declared in the core's pyproject.toml and called by
``advcore.cli.app.register_commands`` (built-ins first, in the order of ``ORDER`` there).
They may import every layer below the CLI and ``advcore.cli.options``/``recipes``; torch
only inside a command's body, after its arguments are checked. Nothing imports them but
the entry points.
"""
