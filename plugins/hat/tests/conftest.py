import os

import pytest
import torch

from advcore.testing import tiny_config
from advcore.testing import train

os.environ.setdefault("ADVCORE_PROGRESS", "0")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def std_checkpoint(tmp_path_factory):
    """A standard network on digits (one epoch), as HAT's helper labeller."""
    out = tmp_path_factory.mktemp("standard")
    train(tiny_config(["standard"], epochs=1, eval={"n": 16, "pgd_steps": 1}), out, log=lambda line: None)
    return str(out / "checkpoints" / "last")
