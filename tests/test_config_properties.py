"""Property test: any invalid configuration gives a one-line ConfigError, never a traceback."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from advcore.kernel.config import RunConfig, load_config
from advcore.errors import ConfigError

SECTIONS = {
    "data": ["dataset", "data_dir", "download", "subset", "batch_size", "eval_batch_size", "augment"],
    "model": ["arch", "width", "normalize"],
    "optim": ["lr", "momentum", "nesterov", "weight_decay", "schedule", "milestones", "gamma", "pct_start", "warmup_epochs", "warmup_start"],
    "attack": ["eps", "step_size", "steps", "model_mode"],
    "eval": ["n", "pgd_steps", "restarts", "every"],
}
TOP = ["epochs", "seed", "device", "deterministic", "plugins"]

values = st.one_of(
    st.integers(-5, 300), st.floats(-2, 2), st.just(float("nan")), st.booleans(), st.none(),
    st.sampled_from(["", "x", "cifar10", "eval", "cosine", "1e-3", "[1,2]", "true"]),
    st.lists(st.integers(-3, 400), max_size=3),
)
keys = st.one_of(
    st.sampled_from(TOP).map(lambda k: k),
    st.sampled_from([f"{s}.{k}" for s, ks in SECTIONS.items() for k in ks]),
    st.text("abcdefgxyz_.", min_size=1, max_size=12),
)


def _as_set(key, value):
    import json
    return f"{key}={json.dumps(value) if not isinstance(value, str) else value}"


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(keys, values), min_size=1, max_size=4))
def test_every_config_is_valid_or_a_one_line_error(pairs):
    overrides = [_as_set(k, v) for k, v in pairs]
    try:
        config = load_config(None, overrides)
    except ConfigError as exc:
        message = str(exc)
        assert message and "\n" not in message and "Traceback" not in message
        assert len(message) < 600
    else:
        assert isinstance(config, RunConfig)
        assert 0 < (config.attack.eps or 0.5) <= 1 and config.epochs >= 1
