"""User-facing errors: one line, naming the problem and the fix.

Everything a user can cause (bad config, unknown plugin, missing data, corrupt checkpoint)
raises an `AdvcoreError`; the CLI prints its message alone and exits with code 1
(usage errors exit 2, see docs/errors.md#exit-codes). Set
``ADVCORE_RAISE_ERRORS=1`` to get the full traceback instead.
"""

from __future__ import annotations

__all__ = ["AdvcoreError", "ConfigError", "PluginError", "CheckpointError", "TrainingError", "Interrupted"]


class AdvcoreError(Exception):
    """A problem the user can fix; its message is shown without a traceback."""

    exit_code = 1


class ConfigError(AdvcoreError):
    """A configuration key or value is not allowed."""


class PluginError(AdvcoreError):
    """A plugin is unknown, conflicts with another, or misbehaved."""


class CheckpointError(AdvcoreError):
    """A checkpoint is missing, corrupt or belongs to another composition."""


class TrainingError(AdvcoreError):
    """Training cannot go on (e.g. the loss became NaN)."""


class Interrupted(AdvcoreError):
    """Training was stopped by a signal after a checkpoint was written."""

    exit_code = 130


class CompositionMismatch(CheckpointError):
    """A checkpoint was trained with other plugins; resuming from any of its files cannot help."""
