"""The crop border: zero (RAAT/HAT/HE code), grey 0.5 (ATTA / hard-instances CIFAR code) or reflect (AWP/IAAT code)."""

import pytest
import torch

from advcore.data.datasets import Augment
from advcore.kernel.config import load_config
from advcore.errors import ConfigError
from advcore.testing import tiny_run

X = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).view(2, 1, 8, 8) / 128
CORNER = torch.tensor([[0, 0], [0, 0]])  # the window at the frame's top-left corner: 4 border rows and columns


@pytest.mark.parametrize("fill, corner", [(0.0, 0.0), (0.5, 0.5)])
def test_constant_borders(fill, corner):
    out = Augment(4, False, fill).apply(X, CORNER, None)
    assert torch.all(out[:, :, :4, :] == corner) and torch.all(out[:, :, :, :4] == corner)
    assert torch.equal(out[:, :, 4:, 4:], X[:, :, :4, :4])


def test_reflect_border_mirrors_without_repeating_the_edge():
    out = Augment(4, False, "reflect").apply(X, CORNER, None)
    # frame row r < 4 shows image row 4 - r, column c < 4 image column 4 - c
    assert out[0, 0, 0, 0] == X[0, 0, 4, 4] and out[1, 0, 3, 1] == X[1, 0, 1, 3]
    assert torch.equal(out[:, :, 4:, 4:], X[:, :, :4, :4])


def test_the_run_config_sets_the_border_and_rejects_bad_values():
    run = tiny_run(["standard"], data={"pad_fill": 0.5})
    assert run.loader.augment.fill == 0.5
    with pytest.raises(ConfigError, match="data.pad_fill"):
        load_config(None, ["data.pad_fill=2"])
