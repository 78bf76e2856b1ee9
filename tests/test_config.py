"""Config files, --set overrides and one-line validation errors."""

import pytest

from advcore.kernel.config import apply_overrides, load_config
from advcore.errors import ConfigError
from advcore.engine import build_run
from advcore.testing import tiny_config


def test_toml_and_yaml_files_and_overrides(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('plugins = ["trades"]\nepochs = 3\n[attack]\neps = 0.2\n[options.trades]\nbeta = 2.0\n')
    cfg = load_config(toml, ["attack.steps=4", "options.trades.beta=5"])
    assert (cfg.plugins, cfg.epochs, cfg.attack.eps, cfg.attack.steps) == (["trades"], 3, 0.2, 4)
    assert cfg.options["trades"] == {"beta": 5}
    yaml = tmp_path / "run.yaml"
    yaml.write_text("epochs: 2\ndata:\n  dataset: fashion-mnist\n  subset: 100\n")
    cfg = load_config(yaml)
    assert cfg.data.dataset == "fashion-mnist" and cfg.data.subset == 100


@pytest.mark.parametrize("override, expected", [
    ("attack.epz=0.1", "attack.epz: unknown key"),
    ("attack.eps=2", "attack.eps: Input should be less than or equal to 1 (got 2)"),
    ("attack.eps=0", "attack.eps: Input should be greater than 0"),
    ("epochs=-1", "epochs: Input should be greater than or equal to 1"),
    ("data.dataset=imagenet", "data.dataset: invalid value 'imagenet' (allowed: 'digits', 'fashion-mnist'"),
    ("optim.schedule=linear", "optim.schedule: invalid value 'linear'"),
    ("attack.steps=ten", "attack.steps: Input should be a valid integer"),
    ("optim.milestones=[9]", "optim.milestones [9] lie outside the run's epochs"),
    ("novalue", "--set 'novalue' needs the form key=value"),
])
def test_bad_values_give_one_line_naming_the_key(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["epochs=5", override] if not override.startswith("epochs") else [override])
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_plugin_options_are_validated_against_the_plugin_model():
    with pytest.raises(ConfigError, match=r"options.trades.bet: unknown key"):
        build_run(tiny_config(["trades"], {"trades": {"bet": 1}}), None)
    with pytest.raises(ConfigError, match=r"options.trades.beta: Input should be greater than or equal to 0"):
        build_run(tiny_config(["trades"], {"trades": {"beta": -1}}), None)


def test_options_of_a_plugin_that_is_not_enabled_are_refused():
    with pytest.raises(ConfigError, match="plugin 'mart' is not enabled; add --plugin mart"):
        build_run(tiny_config(["trades"], {"mart": {"beta": 1}}), None)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_override_values_parse_as_json():
    data = apply_overrides({}, ["a.b=1", "a.c=true", "a.d=[1, 2]", "a.e=text", "a.f=1e-3"])
    assert data == {"a": {"b": 1, "c": True, "d": [1, 2], "e": "text", "f": 0.001}}
