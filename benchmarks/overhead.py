"""advcore vs a same-math hand-written loop, in one process, on the same data and model.

    python benchmarks/overhead.py [--methods pgd-at,trades] [--dataset digits] [--batch-size 128]
                                  [--device cpu] [--batches 20] [--repeats 3]

Prints one line per method: ``METHOD advcore_img_s=X handwritten_img_s=Y ratio=Z`` where
ratio = advcore / hand-written throughput (>= 1.0 means advcore is no slower). Both loops
use the same batches, the same initial weights, the same attack (PGD-K in eval mode, as the
objectives' defaults) and the same optimizer; timings alternate between the two and the
best of ``--repeats`` is kept, so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F

from advcore.testing import tiny_config
from advcore.trainer import build_run, train_step


def handwritten_pgd_at(model, opt, x, y, eps, alpha, steps):
    model.eval()
    delta = (torch.rand_like(x) * 2 - 1) * eps
    x_adv = (x + delta).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
    model.train()
    loss = F.cross_entropy(model(x_adv), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def handwritten_trades(model, opt, x, y, eps, alpha, steps, beta=6.0):
    model.eval()
    with torch.no_grad():
        p_clean = F.softmax(model(x), dim=1)
    x_adv = x + 0.001 * torch.randn_like(x)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.kl_div(F.log_softmax(model(x_adv), 1), p_clean, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
    model.train()
    logits = model(x)
    loss = F.cross_entropy(logits, y) + beta * F.kl_div(F.log_softmax(model(x_adv), 1), F.softmax(logits, 1),
                                                        reduction="batchmean")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


HANDWRITTEN = {"pgd-at": handwritten_pgd_at, "trades": handwritten_trades}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(method: str, args) -> tuple[float, float]:
    config = tiny_config([method], epochs=1, device=args.device,
                         data={"dataset": args.dataset, "batch_size": args.batch_size, "subset": None,
                               "augment": False},
                         model={"arch": args.arch, "width": args.width}, attack={"steps": args.steps},
                         optim={"schedule": "constant", "lr": 0.01})
    run, loader = build_run(config, None)
    run.hooks.on_run_start(run)
    batches = [b for _, b in zip(range(args.batches), loader.epoch(0))]
    model_ref = copy.deepcopy(run.model)
    opt_ref = torch.optim.SGD(model_ref.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    hand = HANDWRITTEN[method]
    images = sum(b.y.shape[0] for b in batches)

    def time_advcore():
        sync(run.device)
        began = time.perf_counter()
        for i, b in enumerate(batches):
            train_step(run, b, 0, i)
        sync(run.device)
        return images / (time.perf_counter() - began)

    def time_hand():
        sync(run.device)
        began = time.perf_counter()
        for b in batches:
            hand(model_ref, opt_ref, b.x, b.y, run.eps, run.step_size, args.steps)
        sync(run.device)
        return images / (time.perf_counter() - began)

    train_step(run, batches[0], 0, 0)  # warm-up both
    hand(model_ref, opt_ref, batches[0].x, batches[0].y, run.eps, run.step_size, args.steps)
    ours, theirs = 0.0, 0.0
    for _ in range(args.repeats):
        ours = max(ours, time_advcore())
        theirs = max(theirs, time_hand())
    return ours, theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="pgd-at,trades")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--arch", default="small-cnn")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    for method in args.methods.split(","):
        ours, theirs = bench(method, args)
        print(f"{method} advcore_img_s={ours:.1f} handwritten_img_s={theirs:.1f} ratio={ours / theirs:.3f}", flush=True)


if __name__ == "__main__":
    main()
