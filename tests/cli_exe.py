"""Run the installed ``advcore`` script (the one next to the test's Python) as a user would."""

import os
import subprocess
import sys
from pathlib import Path

EXE = str(Path(sys.executable).with_name("advcore"))
ENV = dict(os.environ, ADVCORE_PROGRESS="0", OMP_NUM_THREADS="1")
ENV.pop("ADVCORE_RAISE_ERRORS", None)


def advcore(*args, env=None, timeout=600, **kw):
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env={**ENV, **(env or {})},
                          timeout=timeout, **kw)


def one_line(proc) -> str:
    """The single stderr line of a refused command (fails when there is a traceback or more)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]
