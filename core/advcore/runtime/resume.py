"""The resume contract: ``--resume`` continues the run in ``--out`` with the run's own config.

The command line may only restate that config. A flag that would change a key is refused
with one line naming every differing key, unless the change is explicit: ``--epochs N``
(extend or shorten the schedule) or ``--allow-change`` for anything else. Accepted changes
are appended to ``config_history.jsonl`` by the trainer, after the checkpoint loaded, so a
refused resume writes nothing into the run directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..kernel.config import RunConfig, _merge, format_validation_error, load_config
from ..errors import CheckpointError, ConfigError

__all__ = ["resume_config", "config_diff", "record_changes"]

EXPLICIT = {"epochs": "--epochs"}  # keys a plain flag may change on resume: the flag states the change


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):  # an empty table has no leaves
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``key.sub -> (old, new)`` for every leaf that differs (missing leaves read as None)."""
    a, b = _flatten(old), _flatten(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def run_config_data(out: Path) -> dict[str, Any]:
    path = out / "config.json"
    if not (out / "checkpoints" / "last.json").exists() and not (out / "checkpoints" / "previous.json").exists():
        raise CheckpointError(f"nothing to resume in {out}: no checkpoints/last.json; start without --resume")
    try:
        data = json.loads(path.read_text())
        RunConfig.model_validate(data)
    except FileNotFoundError:
        raise CheckpointError(f"cannot resume {out}: its config.json is missing; restore it or start a new run") from None
    except ValidationError as exc:
        raise CheckpointError(f"cannot resume {out}: its config.json is not a valid run config "
                              f"({format_validation_error(exc)}); restore it or start a new run") from None
    except (ValueError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"cannot resume {out}: its config.json is not a valid run config ({first}); "
                              f"restore it or start a new run") from None
    return data


def resume_config(out: Path, *, config_file, sets, fields: dict[str, Any], plugins: list[str],
                  recipe_base: dict[str, Any] | None, allow_change: bool) -> tuple[RunConfig, dict]:
    """The config to resume with and the accepted changes; refuses unstated changes in one line."""
    run_data = run_config_data(out)
    base = json.loads(json.dumps(run_data))
    if recipe_base:
        _merge(base, recipe_base)
    cfg = load_config(config_file, sets or [], base=base, **fields)
    if plugins:
        cfg = cfg.model_copy(update={"plugins": list(dict.fromkeys([*cfg.plugins, *plugins]))})
    old = RunConfig.model_validate(run_data).model_dump(mode="json")
    changes = config_diff(old, cfg.model_dump(mode="json"))
    unstated = {k: v for k, v in changes.items() if not allow_change and not (k in EXPLICIT and fields.get(k) is not None)}
    if unstated:
        listed = ", ".join(f"{k} (run: {json.dumps(a)}, given: {json.dumps(b)})" for k, (a, b) in unstated.items())
        raise ConfigError(f"--resume continues the run in {out} with its own config; the command line would change "
                          f"{listed}; drop those options (advcore train --out {out} --resume), or pass "
                          f"--allow-change to record the change in the run")
    return cfg, changes


def record_changes(out: Path, config: RunConfig, changes: dict, epoch: int, batch: int) -> None:
    """Write the accepted config and append the change to ``config_history.jsonl``."""
    if changes:
        entry = {"resumed_at": {"epoch": epoch, "batch": batch},
                 "changed": {k: {"from": a, "to": b} for k, (a, b) in changes.items()}}
        with open(out / "config_history.jsonl", "a") as f:
            f.write(json.dumps(entry) + "\n")
        (out / "config.json").write_text(json.dumps(config.model_dump(mode="json"), indent=1))
