"""Property test through the installed executable: a random command line either succeeds or
ends with exit 1 (one ``error:`` line) or 2 (click's usage message), never a traceback."""

import subprocess
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli_exe import ENV, EXE

COMMANDS = ["train", "eval", "plan", "recipes", "report", "plot", "plot curves", "margin", "analyze gap", "plugins",
            "bogus", ""]
KEYS = ["epochs", "seed", "attack.eps", "attack.steps", "attack.norm", "optim.lr", "optim.schedule", "data.batch_size",
        "data.subset", "model.width", "eval.every", "checkpoint.every_steps", "ema.decay", "speed.autocast", "nope.key"]
VALUES = st.one_of(st.integers(-3, 2**64), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                   st.sampled_from(["", "x", "8/255", "1/0", "L2", "cosine", "[1]", "true", "-", "--"]),
                   st.text("abc019=./-", max_size=6))
FLAGS = ["--epochs", "--seed", "--subset", "--dataset", "--plugin", "--eps", "--n", "--attack", "--json", "--bogus",
         "--resume", "--fallback", "--twin", "--pgd-steps", "--config"]
TOKENS = st.one_of(
    st.tuples(st.sampled_from(FLAGS), VALUES).map(lambda t: [t[0], str(t[1])]),
    st.tuples(st.sampled_from(KEYS), VALUES).map(lambda t: ["--set", f"{t[0]}={t[1]}"]),
    st.sampled_from(FLAGS).map(lambda f: [f]),
    VALUES.map(lambda v: [str(v)]),
)
# keeps any run that gets through tiny (later --set wins over flags and earlier --set)
TINY = ["--set", "epochs=1", "--set", "data.subset=32", "--set", "data.batch_size=16", "--set", "model.width=8",
        "--set", "eval.n=8", "--set", "eval.pgd_steps=1", "--set", "attack.steps=1", "--set", "data.dataset=digits"]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command=st.sampled_from(COMMANDS), tokens=st.lists(TOKENS, max_size=4))
def test_random_command_lines_end_in_one_line_or_succeed(command, tokens):
    args = [*command.split(), *[t for group in tokens for t in group]]
    if command == "train":
        args += TINY
    with tempfile.TemporaryDirectory() as cwd:  # whatever a command writes stays here
        proc = subprocess.run([EXE, *args], capture_output=True, text=True, env=ENV, timeout=300, cwd=cwd)
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text, (args, text[-2000:])
    assert proc.returncode in (0, 1, 2), (args, proc.returncode, text[-2000:])
    if proc.returncode == 1:
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, proc.stderr)
    if proc.returncode == 2:
        assert "Usage: advcore" in text, (args, text)
