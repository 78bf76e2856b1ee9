"""data.extra_fraction: the share of extra samples in each batch (HAT Sec. 5.3 / App. C.2 uses 70%).

Extra sample j keeps dataset index N_train + j, so counting indices >= N_train in a batch counts
its extra samples. The default 0.5 must give the batches of the half-and-half loader it replaced.
The one-line errors of a fraction out of (0, 1), or set without data.extra, are in the bad-input
catalogue (tests/catalogue.py, run through the installed advcore by tests/test_catalogue.py).
"""

import numpy as np
import pytest
import torch

from advcore.data.datasets import DataError, Dataset, load_dataset
from advcore.data.mixing import MixedLoader
from advcore.engine import build_run
from advcore.testing import tiny_config


def _npz(path, n):
    rs = np.random.RandomState(0)
    np.savez(path, images=rs.randint(0, 256, size=(n, 1, 8, 8)).astype(np.uint8), labels=rs.randint(0, 10, size=n))


@pytest.mark.parametrize("fraction,extra_per_batch,batches", [
    (0.7, 14, 11),   # 20 * 0.7 = 14 extra, 6 training: 64 training samples need ceil(64/6) = 11 batches
    (0.25, 5, 8),    # 20 * 0.25 = 5 extra, 15 training: 40 extras need ceil(40/5) = 8 batches
])
def test_every_batch_holds_exactly_the_configured_share_of_extra_samples(tmp_path, fraction, extra_per_batch, batches):
    _npz(tmp_path / "extra.npz", 40)
    config = tiny_config(["pgd-at"], data={"subset": 64, "batch_size": 20, "augment": False,
                                           "extra": str(tmp_path / "extra.npz"), "extra_fraction": fraction})
    run, loader = build_run(config, None)
    n_train = len(load_dataset("digits")[0])
    epoch = list(loader.epoch(0))
    assert len(epoch) == batches == run.steps_per_epoch
    seen_train, seen_extra = set(), set()
    for b in epoch:
        extra = b.index >= n_train
        assert int(extra.sum()) == extra_per_batch and int((~extra).sum()) == 20 - extra_per_batch
        seen_train |= set(b.index[~extra].tolist())
        seen_extra |= set(b.index[extra].tolist())
        assert torch.equal(b.y, run.train_set.labels[b.index])
    assert seen_train == set(loader.indices.tolist())  # the source that sets the epoch is seen whole,
    assert seen_extra == set(range(n_train, n_train + 40))  # the other one cycled


def _toy(n_train=30, n_extra=10):
    n = n_train + n_extra
    return Dataset(torch.zeros(n, 1, 2, 2, dtype=torch.uint8), torch.zeros(n, dtype=torch.int64), 10, "toy")


# Epoch 1 of the half-and-half loader before data.extra_fraction existed (main at 5c3431c), seed 3,
# training indices 0, 2, ..., 28, extra indices 30..39: training rows on even slots, extra on odd.
HALF_AND_HALF = {
    (7, 1, 0): [[10, 37, 24, 38, 8, 33, 22], [28, 34, 20, 30, 16, 31, 12], [4, 39, 6, 36, 26, 32, 18],
                [2, 35, 0, 39, 14, 33, 22]],
    (4, 2, 0): [[10, 37, 24, 38], [28, 30, 20, 31], [4, 32, 6, 35], [2, 34, 0, 36]],
    (4, 2, 1): [[8, 33, 22, 34], [16, 39, 12, 36], [26, 39, 18, 33], [14, 38, 22, 31]],
}


@pytest.mark.parametrize("batch_size,world_size,rank", list(HALF_AND_HALF))
def test_the_default_half_gives_the_batches_of_the_half_and_half_loader(batch_size, world_size, rank):
    loader = MixedLoader(_toy(), extra_indices=torch.arange(30, 40), batch_size=batch_size, seed=3, augment=None,
                         indices=torch.arange(0, 30, 2), rank=rank, world_size=world_size)
    assert [b.index.tolist() for b in loader.epoch(1)] == HALF_AND_HALF[(batch_size, world_size, rank)]


def test_each_rank_gets_its_share_of_extra_samples():
    """Interleaving spreads the extras over the global batch, so each rank's contiguous part keeps the share."""
    for rank in (0, 1):
        loader = MixedLoader(_toy(), extra_indices=torch.arange(30, 40), batch_size=10, seed=0, augment=None,
                             indices=torch.arange(30), extra_fraction=0.7, rank=rank, world_size=2)
        assert all(int((b.index >= 30).sum()) == 7 for b in loader.epoch(0))


def test_a_batch_too_small_for_the_share_is_a_one_line_error():
    with pytest.raises(DataError, match=r"data.extra_fraction=0.2 of a global batch of 4 leaves 4 training and 0 "
                                        r"extra samples per batch; raise data.batch_size"):
        MixedLoader(_toy(), extra_indices=torch.arange(30, 40), batch_size=4, seed=0, augment=None, extra_fraction=0.2)
