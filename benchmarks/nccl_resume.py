"""One process under torchrun on the NCCL backend: train, checkpoint, resume, compare.

    torchrun --standalone --nproc_per_node 1 benchmarks/nccl_resume.py --out /tmp/nccl --json /tmp/nccl.json

The machine the GPU checks run on has one GPU, so this joins a one-process group (nccl on
CUDA, gloo as the CPU fallback), trains with DDP around the model (its gradient all-reduce
runs on that backend), stops after epoch 1 as an interruption would, resumes from the
checkpoint, and compares the resumed weights with an uninterrupted run in the same group
(deterministic algorithms: they must be bit-identical). Several GPUs' results are covered by
the two-process gloo tests (tests/test_distributed.py). Exit status 0 and ``"equal": true``
in the JSON when the resumed run matches.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from advcore.runtime import checkpoint as ckpt
from advcore.runtime import distributed
from advcore.kernel.config import load_config
from advcore.engine import train

SETTINGS = ["data.dataset=digits", "data.subset=128", "model.arch=small-cnn", "model.width=8", "epochs=2",
            "attack.steps=3", "eval.n=64", "eval.pgd_steps=3", "deterministic=true", "optim.schedule=constant",
            "plugins=[\"pgd-at\"]"]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    _, tensors = ckpt.load_checkpoint(run_dir / "checkpoints" / "last")
    return {k: v for k, v in tensors.items() if not k.startswith("rng.")}  # weights, optimizer, state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="a fresh folder for the two runs")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if "WORLD_SIZE" not in os.environ:
        print("nccl_resume.py: start it with torchrun --standalone --nproc_per_node 1 benchmarks/nccl_resume.py ...",
              file=sys.stderr)
        return 2
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    device = distributed.start(distributed.from_env(), args.device)
    backend = dist.get_backend()
    config = load_config(None, SETTINGS + [f"device={device}"])
    began = time.perf_counter()
    train(config, args.out / "straight", log=lambda line: None)
    train(config, args.out / "split", log=lambda line: None, stop_after=1)
    resumed_from = ckpt.load_checkpoint(args.out / "split" / "checkpoints" / "last")[0]["epoch"]
    train(config, args.out / "split", resume=True, log=lambda line: None)
    a, b = weights(args.out / "straight"), weights(args.out / "split")
    equal = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    report = {"backend": backend, "device": device, "world_size": dist.get_world_size(), "resumed_from_epoch":
              resumed_from, "equal": equal, "tensors": len(a), "seconds": time.perf_counter() - began,
              "torch": torch.__version__,
              "device_name": torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "cpu"}
    print(json.dumps(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0 if equal and resumed_from == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
