"""One writer per run directory: ``OUT/.advcore.lock`` holds the writing process's id.

A second ``advcore train`` on the same ``--out`` is refused in one line while the first is
alive; a lock left by a process that died (``kill -9``) is detected and taken over.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError

LOCK_NAME = ".advcore.lock"
__all__ = ["RunLock", "LOCK_NAME"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """Context manager; ``out=None`` (no run directory, or not rank 0) locks nothing."""

    def __init__(self, out: Path | None, *, create: bool = True) -> None:
        self.path = None if out is None else Path(out) / LOCK_NAME
        self.create = create

    def _unwritable(self, exc: OSError) -> ConfigError:
        out = self.path.parent
        why = "it is a file" if out.exists() and not out.is_dir() else (exc.strerror or str(exc))
        return ConfigError(f"--out {out}: cannot write the run directory there ({why}); choose another --out")

    def __enter__(self) -> "RunLock":
        if self.path is None:
            return self
        try:
            if self.create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._take()
        except ConfigError:
            raise
        except OSError as exc:
            raise self._unwritable(exc) from None
        return self

    def _take(self) -> None:
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and _alive(pid):
                    raise ConfigError(f"run directory {self.path.parent} is in use by advcore process {pid}; wait "
                                      f"for it to finish, stop it, or choose another --out") from None
                self.path.unlink(missing_ok=True)  # stale: its writer is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            return
        raise ConfigError(f"run directory {self.path.parent}: could not take the lock {self.path}; retry")

    def __exit__(self, *exc) -> None:
        if self.path is None:
            return
        try:
            if self.path.read_text().strip() == str(os.getpid()):
                self.path.unlink()
        except OSError:
            pass
