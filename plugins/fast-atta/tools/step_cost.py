"""Training-step cost of fast-atta against PGD-K with the same objective, measured interleaved.

On a shared machine the load changes from minute to minute, so two runs timed one after
the other can differ by 2x for the same work. This script builds both runs in one process
and alternates them batch by batch (same batches, same model size), so load drifts affect
both alike; it prints the summed step times and their ratio.

    python3 plugins/fast-atta/tools/step_cost.py --objective hat \
        --set options.hat.std_checkpoint=runs/hat-fm/hat-standard/checkpoints/last
"""

from __future__ import annotations

import argparse
import time

import torch

from advcore.config import load_config
from advcore.trainer import build_run, train_step

DEFAULTS = ["data.dataset=fashion-mnist", "data.subset=4000", "model.width=16", "device=cpu"]


def timed_runs(objective: str, sets: list[str]):
    runs = {}
    for name, plugins in (("pgd", [objective]), ("fast-atta", [objective, "fast-atta"])):
        config = load_config(None, DEFAULTS + sets + [f"plugins={plugins!r}".replace("'", '"')])
        run, loader = build_run(config, None)
        run.hooks.on_run_start(run)
        runs[name] = (run, loader)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objective", default="hat")
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--set", dest="sets", action="append", default=[], help="config override key=value")
    args = parser.parse_args()
    torch.manual_seed(0)
    runs = timed_runs(args.objective, args.sets)
    totals = {name: 0.0 for name in runs}
    batches = [iter(loader.epoch(0)) for _, loader in runs.values()]
    for b in range(args.batches + 1):
        order = list(zip(runs, batches)) if b % 2 == 0 else list(zip(runs, batches))[::-1]
        for name, it in order:
            run, _ = runs[name]
            began = time.perf_counter()
            train_step(run, next(it), 0, b)
            if b > 0:  # the first batch warms up allocators and caches
                totals[name] += time.perf_counter() - began
    steps = runs["pgd"][0].config.attack.steps
    print(f"{args.objective}: PGD-{steps} {totals['pgd']:.1f}s, fast-atta {totals['fast-atta']:.1f}s over "
          f"{args.batches} batches each; ratio {totals['fast-atta'] / totals['pgd']:.3f}")


if __name__ == "__main__":
    main()
