"""GPU throughput of advcore against its same-math hand-written loops, as one JSON file.

    python benchmarks/gpu.py --json benchmarks/results/gpu.json          # on a CUDA machine
    python benchmarks/gpu.py --quick --json /tmp/gpu.json                 # CPU fallback smoke run

CIFAR-shaped random data (50,000 uint8 images 3x32x32: the data path is timed on its own
rows), ResNet-18 and PreAct-ResNet-18, batch 128 and 512, and for each of pgd-at (PGD-10),
trades, hat, fast-atta and free, in each mode:

* ``fp32``: TF32 matmuls and convolutions off;
* ``tf32``: TF32 on (CUDA only);
* ``bf16``: ``speed.autocast=bf16``;
* ``channels_last``: ``speed.channels_last=true``;
* ``compile``: ``speed.compile=true``; the first step's seconds are ``compile_s``.

Every row has advcore's and the hand-written loop's images/s (benchmarks/handwritten/, the
same loops as benchmarks/overhead.py, given the same mode) on the wall clock after a
synchronize and on the process CPU clock, each as the median and min-max over
``--repeats`` interleaved rounds; the ratio advcore / hand-written per round; the
extrapolated epoch time (``--epoch-size`` images at the median rate); the peak GPU memory
of the run (None on the CPU). ``data_path`` rows time pgd-at with the training set on the
device (``data.on_device=true``) against the host loader (``false``). Modes that do not
apply (TF32 and the data path on the CPU) are listed under ``skipped``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import overhead  # noqa: E402

METHODS = ("pgd-at", "trades", "hat", "fast-atta", "free")
MODES = ("fp32", "tf32", "bf16", "channels_last", "compile")
OPTION_OF_MODE = {"fp32": None, "tf32": None, "bf16": "bf16", "channels_last": "channels_last", "compile": "compile"}


def set_tf32(on: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def row(arch: str, batch_size: int, method: str, mode: str, result: dict, epoch_size: int) -> dict:
    """One result with the extrapolated epoch (median and the rounds' range) and compile time."""
    rate = result["wall"]["advcore_img_s"]
    return {"arch": arch, "batch_size": batch_size, "method": method, "mode": mode, **result,
            "epoch_s": {"median": epoch_size / rate["median"], "min": epoch_size / rate["max"],
                        "max": epoch_size / rate["min"]},
            "compile_s": result["warmup_s"]["advcore"] if mode == "compile" else None}


def bench_args(args, arch: str, batch_size: int) -> argparse.Namespace:
    """The namespace overhead.build/bench read."""
    return argparse.Namespace(dataset="synthetic-cifar", arch=arch, width=8 if arch == "small-cnn" else None,
                              batch_size=batch_size,
                              batches=args.batches, steps=args.steps, repeats=args.repeats, device=args.device)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default="resnet18,preact-resnet18")
    parser.add_argument("--batch-sizes", default="128,512")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--steps", type=int, default=10, help="attack steps K (PGD-10)")
    parser.add_argument("--batches", type=int, default=12,
                        help="batches per round (a multiple of 2 and 3: balanced places)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds (median, min-max)")
    parser.add_argument("--epoch-size", type=int, default=50_000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--quick", action="store_true",
                        help="the smallest setting (CPU fallback test): small-cnn width 8, batch 8, pgd-at and "
                             "fast-atta, fp32 and channels_last, K=1, one batch, two rounds")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.archs, args.batch_sizes, args.methods, args.modes = "small-cnn", "8", "pgd-at,fast-atta", "fp32,channels_last"
        args.steps, args.batches, args.repeats = 1, 1, 2
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.threads:
        torch.set_num_threads(args.threads)
    overhead.synthetic_cifar()
    report = {"command": "python benchmarks/gpu.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
              "machine": {**overhead.machine(device), "threads": torch.get_num_threads()},
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "results": [], "data_path": [], "skipped": []}
    began = time.perf_counter()
    for arch in args.archs.split(","):
        for batch_size in map(int, args.batch_sizes.split(",")):
            bargs = bench_args(args, arch, batch_size)
            methods = args.methods.split(",")
            std = overhead.std_network(bargs) if "hat" in methods else None
            for method in methods:
                for mode in args.modes.split(","):
                    if mode not in MODES:
                        parser.error(f"--modes: unknown mode {mode!r}; choose from {', '.join(MODES)}")
                    if mode == "tf32" and device.type != "cuda":
                        report["skipped"].append(f"{arch} b{batch_size} {method} tf32: TF32 is a CUDA mode")
                        continue
                    set_tf32(mode == "tf32")
                    result = row(arch, batch_size, method, mode,
                                 overhead.bench(method, OPTION_OF_MODE[mode], bargs, std), args.epoch_size)
                    report["results"].append(result)
                    wall = result["wall"]
                    print(f"{arch} b{batch_size} {method} {mode}: advcore {wall['advcore_img_s']['median']:.0f} img/s "
                          f"ratio {wall['ratio']['median']:.3f} [{wall['ratio']['min']:.3f}-{wall['ratio']['max']:.3f}] "
                          f"epoch {result['epoch_s']['median']:.1f}s", flush=True)
            set_tf32(False)
            if device.type != "cuda":
                report["skipped"].append(f"{arch} b{batch_size} data path: on the CPU the data already lives there")
                continue
            on = overhead.bench("pgd-at", "on_device", bargs, None)
            host = overhead.bench("pgd-at", "host_loader", bargs, None)
            report["data_path"].append({
                "arch": arch, "batch_size": batch_size, "on_device": on, "host": host,
                "speedup": on["wall"]["advcore_img_s"]["median"] / host["wall"]["advcore_img_s"]["median"]})
    report["seconds"] = time.perf_counter() - began
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
        print(f"# wrote {args.json} ({report['seconds']:.0f} s)", flush=True)
    return report


if __name__ == "__main__":
    main()
