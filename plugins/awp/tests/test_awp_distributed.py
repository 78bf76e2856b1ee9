"""Under torchrun every rank moves the weights by the global batch's perturbation."""

import os
import subprocess
import sys

import torch

from advcore.testing import load_checkpoint
from advcore import load_config
from advcore.testing import train

SETTINGS = ["data.dataset=digits", "data.subset=64", "model.arch=small-cnn", "model.width=4", "eval.n=16",
            "eval.pgd_steps=1", "optim.schedule=constant", "optim.lr=0.05", "device=cpu", "seed=3", "epochs=1",
            "options.awp.gamma=0.05"]


def weights(run_dir):
    _, tensors = load_checkpoint(run_dir / "checkpoints" / "last")
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


def test_two_processes_perturb_like_one(tmp_path):
    """standard + awp: no random attack, so 2 ranks x 16 must equal 1 process x 32 (small CNN, no BatchNorm)."""
    torch.set_num_threads(1)
    env = dict(os.environ, OMP_NUM_THREADS="1", ADVCORE_PROGRESS="0")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    sets = [a for s in SETTINGS + ["data.batch_size=16"] for a in ("--set", s)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "advcore", "train", "--plugin", "standard", "--plugin", "awp", "--out", str(tmp_path / "ddp"), *sets]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    config = load_config(None, SETTINGS + ["data.batch_size=32", 'plugins=["standard", "awp"]'])
    train(config, tmp_path / "single", log=lambda line: None)
    got, want = weights(tmp_path / "ddp"), weights(tmp_path / "single")
    assert sorted(got) == sorted(want)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-5, msg=key)
