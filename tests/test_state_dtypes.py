"""Per-sample state of any dtype (int8 flags, int32 counts, epoch stamps) is checkpointed as that dtype."""

import pytest
import torch

from advcore.testing import tiny_run
from advcore.engine import restore_checkpoint, write_checkpoint

DTYPES = [torch.bool, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.float16,
          torch.bfloat16, torch.float64]


def test_every_dtype_survives_a_checkpoint_bit_for_bit(tmp_path):
    run = tiny_run(["standard"], out=tmp_path)
    n = run.state.num_samples
    written = {}
    for i, dtype in enumerate(DTYPES):
        t = run.state.tensor(f"probe.{i}", (3,) if i % 2 else (), dtype=dtype, fill=1)
        values = torch.arange(t.numel()).view(t.shape) % 7 - (0 if dtype in (torch.bool, torch.uint8) else 3)
        t.copy_(values.to(dtype))
        written[f"probe.{i}"] = t.clone()
    write_checkpoint(run, "last", epoch=1)
    fresh = tiny_run(["standard"], out=tmp_path)
    restore_checkpoint(fresh, tmp_path / "checkpoints" / "last")
    for i, dtype in enumerate(DTYPES):
        name = f"probe.{i}"
        assert fresh.state[name].dtype == dtype and torch.equal(fresh.state[name], written[name]), name
        # the plugin that asks for it again with its dtype gets the restored tensor, no cast
        assert fresh.state.tensor(name, tuple(written[name].shape[1:]), dtype=dtype) is fresh.state[name]
    assert run.state.state_dict()["probe.1"].element_size() == 1  # int8 flags cost 1 byte a sample, not 4
    assert n == fresh.state.num_samples


def test_asking_for_another_dtype_names_both():
    run = tiny_run(["standard"])
    run.state.tensor("probe.count", dtype=torch.int32)
    with pytest.raises(ValueError, match=r"'probe.count' exists as \(\)/torch.int32, asked for \(\)/torch.float32"):
        run.state.tensor("probe.count")
