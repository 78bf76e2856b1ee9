import os

import pytest
import torch

os.environ.setdefault("ADVCORE_PROGRESS", "0")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
