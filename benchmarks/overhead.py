"""advcore vs a same-math hand-written loop, in one process, on the same data and model.

    python benchmarks/overhead.py [--methods pgd-at,trades,...] [--options channels_last,bf16,compile,on_device]
        [--dataset digits] [--arch small-cnn] [--batch-size 128] [--batches 6] [--steps 10]
        [--repeats 7] [--device cpu|cuda] [--keep-host-memory auto|false] [--noise pgd-at,...]
        [--quick] [--json FILE]

Prints one line per method: ``METHOD advcore_img_s=X handwritten_img_s=Y ratio=Z [MIN-MAX]
same_ratio=S [MIN-MAX] wall_ratio=W [MIN-MAX]``. ``ratio`` = advcore / hand-written throughput
(>= 1.0: advcore is no slower) with advcore as ``advcore train`` runs it, its speed defaults
included (channels_last on the CPU), against the hand-written loop in plain PyTorch;
``same_ratio`` is advcore on the hand-written loop's own plain path, like for like: the
framework's own cost (printed where the two paths differ). Each is the median over
``--repeats`` interleaved rounds with the rounds' min-max, on the clock named by ``--clock``
and (on the CPU) the wall clock too; then one line per speed option,
``METHOD+OPTION ... speedup=S`` with S = advcore with the option / advcore on the plain path
(the hand-written loop gets the same option). Lines starting with ``#`` are notes: the
device, each method's ``epoch_s`` (``--epoch-size`` images at advcore's rate, evaluation
excluded), a plugin that is not installed, an option that does not apply, ``noise METHOD``
(``--noise``: two copies of that hand-written loop timed against each other, the spread two
identical loops show on this machine), and for
``fast-atta`` or ``OBJECTIVE+fast-atta`` timed after its objective, ``cost_vs_pgd``: its step
time over the objective's PGD-K step time. ``--json`` writes every figure (both clocks,
per-round spread, warm-up seconds, peak GPU memory) with the machine description.

All loops start from the same weights, take the same batches from advcore's loader
(gathering and conversion included in the timing) and the same optimizer settings (advcore
with its fused SGD update, the hand-written loop with PyTorch's default one, as a script); the
hand-written steps (benchmarks/handwritten/, one file per method family) implement each
plugin's default options, and all are stepped at ``training_epoch`` (after every enabled
plugin's warm-up). They alternate batch by batch, each batch in the next rotation of their
order (ABBA for two; ABC, BCA, CAB for three, where none runs twice in a row on a cache it
warmed itself), so each loop takes each place equally often when ``--batches`` is a
multiple of their number; each step is timed on its own, after a synchronize on CUDA. On
the CPU the default clock is the process's CPU time (one thread by default), which a
shared, busy machine disturbs far less than wall time; on CUDA it is wall time after a
synchronize. ``speed.keep_host_memory`` is process-wide, so the hand-written loop shares
it; ``--keep-host-memory false`` times a process without it. ``--dataset synthetic-cifar``
times CIFAR-shaped random images when CIFAR-10 is not on disk.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from handwritten import LOOPS, Context  # noqa: E402

from advcore.kernel.plugins import installed_plugins  # noqa: E402
from advcore.runtime.speed import Forward, cpu_default_on  # noqa: E402
from advcore.testing import tiny_config  # noqa: E402
from advcore.engine import build_run, train_step, write_checkpoint  # noqa: E402

METHODS = ("standard", "pgd-at", "trades", "hat", "mart", "alp", "fgsm-rs", "he", "cons-at", "raat", "iaat", "free",
           "awp", "fat", "gairat", "reweight", "adaptive-targets", "difficulty", "fast-atta", "trades+fast-atta",
           "hat+fast-atta", "raat+mart", "hat+awp", "hat+fat", "trades+gairat", "fast-atta+reweight+adaptive-targets")
OPTIONS = ("channels_last", "bf16", "compile", "on_device")
SPEED = {"channels_last": {"speed": {"channels_last": True}}, "bf16": {"speed": {"autocast": "bf16"}},
         "compile": {"speed": {"compile": True}}, "on_device": {"data": {"on_device": True}},
         "host_loader": {"data": {"on_device": False}}}  # the last: for benchmarks/gpu.py's data-path rows


def synthetic_cifar() -> None:
    """Replace the dataset loader with 50,000 random CIFAR-shaped images (speed only, no accuracy)."""
    import advcore.engine.build as trainer_build
    from advcore.data.datasets import Dataset, DatasetInfo

    made: dict = {}

    def load(name, **kwargs):
        if made:  # one set per process: gpu.py builds a hundred runs
            return made["sets"]
        g = torch.Generator().manual_seed(0)
        make = lambda n: Dataset(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),  # noqa: E731
                                 torch.randint(0, 10, (n,), generator=g), 10, "synthetic-cifar")
        made["sets"] = make(50_000), make(1_000), DatasetInfo("synthetic-cifar", 10, 3, 32, 8 / 255, 4, True)
        return made["sets"]

    trainer_build.load_dataset = load


def build(method: str, option: str | None, args, std_checkpoint: str | None, *, defaults: bool = False):
    """advcore's run of ``method``: on the plain path the twin takes (``speed.channels_last=false``)
    with ``option`` on top, or with ``defaults=True`` as ``advcore train`` runs it (every speed
    default, channels_last=auto included)."""
    plugins = method.split("+")  # "hat+fast-atta": the objective with another adversary
    options = {"hat": {"std_checkpoint": std_checkpoint}} if "hat" in plugins else {}
    if "iaat" in plugins:  # the hand-written twin is Alg. 1/2 as the paper writes it
        options["iaat"] = {"misclassified": "clean", "attack_mode": "objective"}
    dataset = "cifar10" if args.dataset == "synthetic-cifar" else args.dataset
    sections = {"data": {"dataset": dataset, "batch_size": args.batch_size, "subset": getattr(args, "subset", None),
                         "augment": False},
                "model": {"arch": args.arch, "width": args.width if args.arch == "small-cnn" else None},
                "attack": {"steps": args.steps}, "optim": {"schedule": "constant", "lr": 0.01},
                "speed": {"keep_host_memory": getattr(args, "keep_host_memory", "auto")}}
    if not defaults:
        sections["speed"]["channels_last"] = False  # the plain path, like the twin's; an option row turns it on
    for key, value in SPEED.get(option, {}).items():
        sections[key] = {**sections.get(key, {}), **value}
    run, loader = build_run(tiny_config(plugins, options, epochs=1, device=args.device, **sections), None)
    run.hooks.on_run_start(run)
    if method == "iaat":  # time the search phase (after warm-up), radii at the warm-up eps as it leaves them
        run.state.tensor("iaat.radius").fill_(run.eps)
    return run, loader


def training_epoch(run) -> int:
    """The epoch both loops' steps are taken at: after every enabled plugin's warm-up (reweight and
    adaptive-targets weight and adapt only from epoch 5, iaat searches its radii from then on), so
    the method is timed and checked as it trains, not as its warm-up's plain PGD-AT."""
    return max([getattr(run.options.get(name), "warmup", 0) for name in run.plugin_names], default=0)


def handwritten_forward(model: torch.nn.Module, option: str | None):
    if option == "channels_last":
        return Forward(model, channels_last=True, autocast="off")
    if option == "bf16":
        return Forward(model, channels_last=False, autocast="bf16")
    if option == "compile":
        return torch.compile(model)
    return model


def handwritten_context(run, option: str | None, steps: int) -> Context:
    """What a hand-written loop needs, from an advcore run: a copy of its initial weights, the
    same optimizer settings (``build`` gives advcore SGD lr 0.01, momentum 0.9, wd 5e-4), its
    budgets, data shape and HAT's standard network."""
    model = copy.deepcopy(run.model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    ctx = Context(model=model, forward=handwritten_forward(model, option), opt=opt, eps=run.eps,
                  alpha=run.step_size, steps=steps, num_samples=len(run.train_set),
                  image_shape=tuple(run.train_set.images.shape[1:]), device=run.device,
                  std=run.stash["hat"].std if "hat" in run.stash else None, epoch=training_epoch(run))
    if option == "channels_last":
        model.to(memory_format=torch.channels_last)
    return ctx


def std_network(args, out: Path | None = None) -> str:
    """An (untrained) standard network checkpoint for HAT's helper labels: its cost, not its accuracy, matters."""
    import tempfile

    out = out or Path(tempfile.mkdtemp(prefix="advcore-bench-"))
    dataset = "cifar10" if args.dataset == "synthetic-cifar" else args.dataset
    model = {"arch": args.arch, "width": args.width if args.arch == "small-cnn" else None}
    config = tiny_config(["standard"], device=args.device, data={"dataset": dataset, "subset": None}, model=model)
    run, _ = build_run(config, out)
    write_checkpoint(run, "last", epoch=1)
    return str(out / "checkpoints" / "last")


def machine(device: torch.device) -> dict:
    """What the numbers were measured on: cores, CPU model, torch version, device name."""
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
    return info


def spread(values: list[float]) -> dict:
    """Median and min-max of one quantity over the rounds."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])
    return {"median": median, "min": ordered[0], "max": ordered[-1], "rounds": len(ordered)}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(steps: dict, batches: int, images: int, device: torch.device, fresh=dict) -> dict:
    """One round: every loop over the same ``batches``, interleaved batch by batch in turning order,
    so a change in the machine's load hits them alike; ``{(name, clock): images/s}``. ``fresh()``
    gives what the steps read their batches from.

    The orders are the rotations of the loops' list (ABBA for two; ABC, BCA, CAB for three):
    each loop takes each place once per cycle, and with three no loop follows itself (with all
    six permutations two of the loops did, once per cycle, on caches they had just warmed)."""
    names = list(steps)
    orders = [names[k:] + names[:k] for k in range(len(names))]
    spent = {(who, c): 0.0 for who in steps for c in ("cpu", "wall")}
    source = fresh()
    for i in range(batches):
        for who in orders[i % len(orders)]:
            sync(device)
            cpu, wall = time.process_time(), time.perf_counter()
            steps[who](i, source)
            sync(device)
            spent[who, "cpu"] += time.process_time() - cpu
            spent[who, "wall"] += time.perf_counter() - wall
    return {key: images / max(seconds, 1e-9) for key, seconds in spent.items()}


def twin_batch(images, labels, index, device):
    """A hand-written loop's batch: gathered from where advcore placed the data, converted like a script."""
    x = images[index.to(images.device)].to(device, non_blocking=True).float().div_(255)
    return x, labels[index.to(labels.device)].to(device, non_blocking=True), index.to(device)


def noise_floor(method: str, args) -> dict:
    """Two copies of the same hand-written loop timed like a method row: how far apart this
    machine puts two identical loops (the ratio's median and min-max over the rounds)."""
    run, loader = build(method, None, args, None)
    copies = {who: LOOPS[method](handwritten_context(run, None, args.steps)) for who in ("first", "second")}
    images, labels = run.train_set.images, run.train_set.labels
    batches = [b for _, b in zip(range(args.batches), loader.epoch(0))]
    count = sum(b.y.numel() for b in batches)

    def step(who: str):
        return lambda i, _: copies[who](*twin_batch(images, labels, batches[i].index, run.device))

    steps = {who: step(who) for who in copies}
    for who in copies:
        steps[who](0, None)  # warm-up
    rounds = [interleaved(steps, len(batches), count, run.device) for _ in range(args.repeats)]
    return {"method": method, **{c: {"ratio": spread([r["first", c] / r["second", c] for r in rounds])}
                                 for c in ("cpu", "wall")}}


def bench(method: str, option: str | None, args, std: str | None) -> dict:
    """Time advcore's step against its hand-written twin; per-round images/s on both clocks.

    A method row (``option=None``) times three contenders: advcore as ``advcore train`` runs it
    (its speed defaults: ``advcore``), advcore on the twin's plain path (``same``: the framework's
    own cost, like for like) and the twin; an option row gives the option to advcore and the twin.
    """
    if torch.device(args.device).type == "cuda":  # the previous row's run must not count in this one's peak
        gc.collect()
        torch.cuda.empty_cache()
    run, loader = build(method, option, args, std)
    contenders = {"advcore": (run, loader)}
    if option is None and cpu_default_on("auto", run.device):  # the defaults differ from the plain path
        contenders = {"advcore": build(method, None, args, std, defaults=True), "same": (run, loader)}
    epoch = training_epoch(run)
    images = run.train_set.images  # where advcore placed it (data.on_device): both loops gather from there
    hand = LOOPS[method](handwritten_context(run, option, args.steps))
    indices = [b.index.cpu() for _, b in zip(range(args.batches), loader.epoch(0))]
    labels = run.train_set.labels.to(run.device)
    count = sum(i.numel() for i in indices)

    def advcore_step(who: str):
        contender, _ = contenders[who]
        return lambda i, batches: train_step(contender, next(batches[who]), epoch, i)

    def hand_step(i: int, _) -> None:
        if i == 0:  # an epoch's shuffle, as advcore's loader draws when its first batch is taken
            torch.randperm(len(run.train_set), generator=torch.Generator().manual_seed(i))
        hand(*twin_batch(images, labels, indices[i], run.device))

    steps = {**{who: advcore_step(who) for who in contenders}, "handwritten": hand_step}
    one_round = lambda: interleaved(steps, len(indices), count, run.device,  # noqa: E731
                                    lambda: {who: iter(contenders[who][1].epoch(0)) for who in contenders})
    first = next(iter(loader.epoch(0)))
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.device)
    warm = {}
    for who, (contender, _) in contenders.items():
        began = time.perf_counter()
        train_step(contender, first, epoch, 0)  # warm-up (and compilation) outside the timing
        sync(run.device)
        warm[who] = time.perf_counter() - began
    began = time.perf_counter()
    hand(first.x, first.y, first.index)
    sync(run.device)
    warm["handwritten"] = time.perf_counter() - began
    rounds = [one_round() for _ in range(args.repeats)]
    result = {"method": method, "option": option or "none", "images_per_round": count, "warmup_s": warm,
              "peak_gpu_bytes": torch.cuda.max_memory_allocated(run.device) if run.device.type == "cuda" else None}
    for c in ("cpu", "wall"):
        result[c] = {f"{who}_img_s": spread([r[who, c] for r in rounds]) for who in steps}
        result[c]["ratio"] = spread([r["advcore", c] / r["handwritten", c] for r in rounds])
        if "same" in steps:  # the framework's own cost, and what its speed defaults win
            result[c]["same_ratio"] = spread([r["same", c] / r["handwritten", c] for r in rounds])
            result[c]["defaults_speedup"] = spread([r["advcore", c] / r["same", c] for r in rounds])
    return result


def line(name: str, result: dict, clock_name: str, extra: str = "") -> str:
    """``NAME advcore_img_s=X handwritten_img_s=Y ratio=Z [min-max] same_ratio=S [min-max]
    wall_ratio=W [min-max]`` (medians; ``same_ratio`` where advcore's defaults differ from the plain path)."""
    r, w = result[clock_name], result["wall" if clock_name == "cpu" else "cpu"]
    text = (f"{name} advcore_img_s={r['advcore_img_s']['median']:.1f} "
            f"handwritten_img_s={r['handwritten_img_s']['median']:.1f} ratio={r['ratio']['median']:.3f} "
            f"[{r['ratio']['min']:.3f}-{r['ratio']['max']:.3f}]")
    if "same_ratio" in r:
        text += f" same_ratio={r['same_ratio']['median']:.3f} [{r['same_ratio']['min']:.3f}-{r['same_ratio']['max']:.3f}]"
    if clock_name == "cpu":
        text += f" wall_ratio={w['ratio']['median']:.3f} [{w['ratio']['min']:.3f}-{w['ratio']['max']:.3f}]"
    return text + extra


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--options", default=",".join(OPTIONS), help="speed options timed on pgd-at ('' for none)")
    parser.add_argument("--dataset", default="digits", help="an advcore dataset or synthetic-cifar")
    parser.add_argument("--arch", default="small-cnn")
    parser.add_argument("--width", type=int, default=32, help="small-cnn width")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=6, help="batches per round (a multiple of 2 and 3 keeps "
                                                                "every loop's places balanced)")
    parser.add_argument("--steps", type=int, default=10, help="attack steps K")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds (median and min-max reported)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default=None,
                        help="the clock of the printed ratio: cpu = process CPU time (default on the CPU), "
                             "wall = elapsed time (default on CUDA); the JSON has both")
    parser.add_argument("--epoch-size", type=int, default=50_000, help="images per epoch for the epoch_s note")
    parser.add_argument("--option-methods", default="pgd-at", help="methods the speed options are timed on")
    parser.add_argument("--subset", type=int, default=None, help="first N training samples (dataset-size rows)")
    parser.add_argument("--noise", default="", help="methods whose hand-written loop is also timed against a copy "
                                                   "of itself: the machine's noise floor for the ratios")
    parser.add_argument("--keep-host-memory", choices=("auto", "false"), default="auto",
                        help="speed.keep_host_memory of every run (process-wide, so the twin shares it): false "
                             "times glibc's default allocator, for the option's speedup across two processes")
    parser.add_argument("--quick", action="store_true", help="a smoke run: width 8, 2 batches, K=2, 2 rounds")
    parser.add_argument("--json", type=Path, default=None, help="write every figure, with the machine, here")
    args = parser.parse_args(argv)
    if args.quick:
        args.width, args.batches, args.steps, args.repeats = 8, 2, 2, 2
    device = torch.device(args.device)
    args.clock = args.clock or ("wall" if device.type == "cuda" else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    if args.dataset == "synthetic-cifar":
        synthetic_cifar()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        print(f"# device {torch.cuda.get_device_name(device)}, clock {args.clock}", flush=True)
    else:
        print(f"# device cpu, {args.threads} thread(s), clock {args.clock}", flush=True)
    print("# ratio = advcore / hand-written images/s, median over rounds [min-max]", flush=True)
    report = {"command": "python benchmarks/overhead.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
              "machine": {**machine(device), "threads": args.threads},
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "methods": [], "options": [], "notes": []}

    def note(text: str) -> None:
        report["notes"].append(text)
        print(f"# {text}", flush=True)

    installed = installed_plugins()
    methods = [m for m in args.methods.split(",") if m]
    std = std_network(args) if "hat" in installed and any("hat" in m.split("+") for m in methods) else None
    eager: dict[str, dict] = {}
    for method in methods:
        missing = [p for p in method.split("+") if p not in installed]
        if missing:
            note(f"{method} skipped: plugin {missing[0]} not installed")
            continue
        if method not in LOOPS:
            parser.error(f"--methods: no hand-written loop for {method!r}; choose from {', '.join(LOOPS)}")
        result = bench(method, None, args, std)
        eager[method] = result
        ours = result[args.clock]["advcore_img_s"]["median"]
        result["epoch_s"] = args.epoch_size / ours
        objective = "+".join(p for p in method.split("+") if p != "fast-atta") or "pgd-at"
        if objective != method and objective in eager:  # same objective, PGD-K vs fast-atta: cost per step
            result["cost_vs_pgd"] = eager[objective][args.clock]["advcore_img_s"]["median"] / ours
        report["methods"].append(result)
        print(line(method, result, args.clock), flush=True)
        print(f"# {method} epoch_s={result['epoch_s']:.1f} ({args.epoch_size} images)", flush=True)
        if "cost_vs_pgd" in result:
            print(f"# {method} cost_vs_pgd={result['cost_vs_pgd']:.3f} (step time over {objective} "
                  f"with PGD-{args.steps})", flush=True)
    for method in [m for m in args.noise.split(",") if m]:
        if method not in LOOPS:
            parser.error(f"--noise: no hand-written loop for {method!r}; choose from {', '.join(LOOPS)}")
        floor = noise_floor(method, args)
        report.setdefault("noise", []).append(floor)
        r = floor[args.clock]["ratio"]
        print(f"# noise {method}: two copies of its hand-written loop, ratio={r['median']:.3f} "
              f"[{r['min']:.3f}-{r['max']:.3f}]", flush=True)
    options = [o for o in args.options.split(",") if o]
    for option in options:
        if option not in OPTIONS:
            parser.error(f"--options: unknown option {option!r}; choose from {', '.join(OPTIONS)}")
    option_methods = [m for m in args.option_methods.split(",") if m] if options else []
    if any("hat" in m.split("+") for m in option_methods) and std is None and "hat" in installed:
        std = std_network(args)
    for method in option_methods:
        if method not in LOOPS:
            parser.error(f"--option-methods: no hand-written loop for {method!r}; choose from {', '.join(LOOPS)}")
        for option in options:
            if option == "on_device" and device.type == "cpu":
                note(f"{method}+on_device skipped: on the CPU the data already lives on the device")
                continue
            base = eager.get(method) or bench(method, None, args, std)
            eager[method] = base
            result = bench(method, option, args, std)
            plain = base[args.clock].get("same_img_s", base[args.clock]["advcore_img_s"])  # without its defaults
            result["speedup"] = result[args.clock]["advcore_img_s"]["median"] / plain["median"]
            report["options"].append(result)
            print(line(f"{method}+{option}", result, args.clock, f" speedup={result['speedup']:.3f}"), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
        print(f"# wrote {args.json}", flush=True)
    return report


if __name__ == "__main__":
    main()
