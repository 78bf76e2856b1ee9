"""Regenerate every measured figure and docs/performance.md with one command.

    python benchmarks/report.py            # the full set (a quiet 2-core CPU: see the time printed at the end)
    python benchmarks/report.py --quick    # a smoke run of every part (minutes; numbers not for the docs)

Each part runs in its own process, writes its JSON under ``benchmarks/results/`` (with the
command and the machine) and the page is rendered from those files and the template
``benchmarks/performance.md.in``: no figure on the page is typed by hand. Parts:

* ``overhead.json``: benchmarks/overhead.py, every method against its hand-written twin,
  and the speed options per method;
* ``scaling.json``: pgd-at's cost per image against dataset size, batch size, width and
  threads, and the peak RSS of one benchmark process per method;
* ``host_memory.json``: ``speed.keep_host_memory``'s speedup, two overhead.py processes (it is
  process-wide), one with glibc's default allocator;
* ``startup.json``: wall seconds of ``advcore --help``, ``advcore plugins`` and a usage
  error (repeated runs: min, median, max), with ``import torch`` alone for reference;
* ``eval_cost.json``: a default 5-epoch digits run of pgd-at, evaluation seconds against
  epoch seconds from its metrics.jsonl;
* ``gpu.json`` is not made here (it needs a GPU: see docs/performance.md); when present it
  is rendered too.

``--render-only`` re-renders the page from the JSON files already there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
TEMPLATE = HERE / "performance.md.in"
PAGE = REPO / "docs" / "performance.md"
PY = sys.executable
ENV = dict(os.environ, ADVCORE_PROGRESS="0")



def overhead_methods() -> str:
    """overhead.py's METHODS, every method with a hand-written twin (read from its source, so this
    process never imports torch)."""
    import ast

    tree = ast.parse((HERE / "overhead.py").read_text())
    value = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                 and any(getattr(t, "id", None) == "METHODS" for t in node.targets))
    return ",".join(ast.literal_eval(value))


ALL_METHODS = overhead_methods()


def child(cmd: list[str], env: dict | None = None) -> tuple[int, float, int, str]:
    """Run ``cmd``; (exit status, wall seconds, peak RSS in KiB, stdout) of that process alone."""
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env or ENV,
                            cwd=REPO)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - began, usage.ru_maxrss, out


def overhead(args, out: Path, *extra: str) -> tuple[dict, int]:
    where = os.path.relpath(out, REPO) if REPO in out.resolve().parents else str(out)
    code, _, rss, text = child([PY, "benchmarks/overhead.py", *extra, "--json", where])
    if code != 0:
        raise SystemExit(f"report.py: overhead.py {' '.join(extra)} failed (exit {code}); run it alone to see why")
    return json.loads(out.read_text()), rss


def part_overhead(args) -> dict:
    """Every method, then the speed options in runs sized to their cost (bf16 emulated on a CPU
    without bf16 arithmetic is ~10x slower; compile spends minutes compiling); one JSON."""
    if args.quick:
        runs = [["--quick", "--methods", "pgd-at,fast-atta", "--options", ""],
                ["--quick", "--methods", "", "--options", "channels_last", "--option-methods", "pgd-at"]]
    else:
        runs = [["--methods", ALL_METHODS, "--batches", "12", "--repeats", "7", "--options", "",
                 "--noise", "standard,pgd-at,fast-atta"],
                ["--methods", "", "--options", "compile", "--option-methods", "pgd-at", "--batches", "8", "--repeats", "3"],
                ["--methods", "", "--options", "bf16", "--option-methods", "pgd-at", "--batches", "4", "--repeats", "3"]]
    merged: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, extra in enumerate(runs):
            part, _ = overhead(args, Path(tmp) / f"{i}.json", *extra)
            part["command"] = part["command"].rsplit(" --json ", 1)[0]
            if not merged:
                merged = {**part, "command": [part["command"]]}
            else:
                merged["command"].append(part["command"])
                for key in ("methods", "options", "notes", "noise"):
                    merged[key] = merged.get(key, []) + part.get(key, [])
    merged["command"] = "; ".join(merged["command"])
    return merged


HOST_MEMORY_METHODS = "pgd-at,trades,fast-atta,gairat"


def part_host_memory(args) -> dict:
    """``speed.keep_host_memory`` is process-wide: one overhead.py process with it (auto, on the
    CPU) and one with glibc's defaults, the same settings; speedup = images/s with / without."""
    settings = (["--quick", "--methods", "pgd-at", "--options", ""] if args.quick else
                ["--methods", HOST_MEMORY_METHODS, "--options", "", "--batches", "8", "--repeats", "3"])
    with tempfile.TemporaryDirectory() as tmp:
        kept, _ = overhead(args, Path(tmp) / "kept.json", *settings)
        system, _ = overhead(args, Path(tmp) / "system.json", *settings, "--keep-host-memory", "false")
    clock = kept["settings"]["clock"]
    rows = []
    for a, b in zip(kept["methods"], system["methods"]):
        rows.append({"method": a["method"], **{f"{who}_speedup": a[clock][f"{who}_img_s"]["median"]
                                                / b[clock][f"{who}_img_s"]["median"]
                                                for who in ("advcore", "handwritten")},
                     "kept": a[clock], "system": b[clock]})
    return {"command": [kept["command"].rsplit(" --json ", 1)[0], system["command"].rsplit(" --json ", 1)[0]],
            "machine": kept["machine"], "clock": clock, "rows": rows}


def per_image(rate: dict) -> dict:
    """Milliseconds per image from an images/s spread (the fastest round is the cheapest)."""
    return {"median": 1000 / rate["median"], "min": 1000 / rate["max"], "max": 1000 / rate["min"]}


def part_scaling(args) -> dict:
    base = ["--methods", "pgd-at", "--options", ""] + (["--quick"] if args.quick else ["--batches", "8", "--repeats", "5"])
    axes = {"dataset": [["--subset", "256"], [], ["--dataset", "synthetic-cifar", "--batches", "2", "--repeats", "3"]],
            "batch_size": [["--batch-size", "32"], ["--batch-size", "128"], ["--batch-size", "512"]],
            "width": [["--width", "8"], ["--width", "32"], ["--width", "64"]],
            "threads": [["--threads", "1"], ["--threads", "2"]]}
    if args.quick:
        axes = {"batch_size": [["--batch-size", "32"], ["--batch-size", "64"]], "threads": [["--threads", "1"], ["--threads", "2"]]}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for axis, settings in axes.items():
            for setting in settings:
                report, rss = overhead(args, Path(tmp) / "o.json", *base, *setting)
                r = report["methods"][0]
                rows.append({"axis": axis, "setting": " ".join(setting) or "(default)", "train_size":
                             report["settings"].get("subset"), "peak_rss_kib": rss,
                             "ms_per_image_cpu": per_image(r["cpu"]["advcore_img_s"]),
                             "ms_per_image_wall": per_image(r["wall"]["advcore_img_s"]),
                             "ratio_cpu": r["cpu"]["ratio"], "settings": report["settings"]})
        memory = []
        methods = "pgd-at,fast-atta" if args.quick else ALL_METHODS
        for method in methods.split(","):
            report, rss = overhead(args, Path(tmp) / "m.json", "--methods", method, "--options", "",
                                   *(["--quick"] if args.quick else ["--batches", "4", "--repeats", "1"]))
            memory.append({"method": method, "peak_rss_kib": rss})
    return {"machine": report["machine"], "rows": rows, "memory": memory,
            "note": "min/median/max of ms per image are 1000 / (max/median/min images/s) over the rounds"}


def part_startup(args) -> dict:
    advcore = str(Path(PY).with_name("advcore"))
    commands = {"import torch": [PY, "-c", "import torch"], "advcore --help": [advcore, "--help"],
                "advcore plugins": [advcore, "plugins"], "usage error": [advcore, "train", "--plugin"]}
    repeats = 3 if args.quick else 7
    out = {}
    for name, cmd in commands.items():
        times, codes = [], set()
        child(cmd)  # one run to warm the page cache
        for _ in range(repeats):
            code, wall, _, _ = child(cmd)
            times.append(wall)
            codes.add(code)
        out[name] = {"command": " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd)),
                     "min": min(times), "median": statistics.median(times), "max": max(times),
                     "runs": repeats, "exit_codes": sorted(codes)}
    return {"commands": out}


def part_eval_cost(args) -> dict:
    advcore = str(Path(PY).with_name("advcore"))
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [advcore, "train", "--plugin", "pgd-at", "--out", str(Path(tmp) / "run")]
        if args.quick:
            cmd += ["--epochs", "2", "--subset", "128"]
        code, wall, _, _ = child(cmd, env=dict(ENV, OMP_NUM_THREADS="1"))
        lines = [json.loads(x) for x in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    eval_s = sum(m.get("eval_seconds", 0.0) for m in lines)
    epoch_s = sum(m["seconds"] for m in lines)
    return {"command": " ".join(["advcore"] + cmd[1:4] + ["--out", "DIR"] + cmd[6:]) + " (OMP_NUM_THREADS=1)",
            "exit": code,
            "wall_s": wall, "epochs": [{k: m.get(k) for k in ("epoch", "seconds", "eval_seconds", "eval_n")}
                                       for m in lines],
            "eval_s": eval_s, "epoch_s": epoch_s, "eval_share": eval_s / epoch_s}


# --- rendering ------------------------------------------------------------------------------


def spread(s: dict, fmt: str = "{:.3f}") -> str:
    return f"{fmt.format(s['median'])} [{fmt.format(s['min'])}-{fmt.format(s['max'])}]"


def machine_line(m: dict) -> str:
    load = f", load average {m['load_average']:.2f} at the start" if m.get("load_average") is not None else ""
    device = "" if m.get("device") == "cpu" else f", {m['device']} (CUDA {m.get('cuda')})"
    return f"{m['cpu']}, {m['cores']} cores, {m.get('threads', 1)} thread(s), torch {m['torch']}{device}{load}"


def render_overhead(r: dict | None) -> str:
    if r is None:
        return "_Not measured yet: run `python benchmarks/report.py`._"
    clock = r["settings"]["clock"]
    lines = [f"Command: `{r['command']}`  ", f"Machine: {machine_line(r['machine'])}  ",
             f"Clock: {clock} time (the `wall ratio` column: the wall clock); median over "
             f"{r['settings']['repeats']} interleaved rounds [min-max].", "",
             "| method | advcore img/s | hand-written img/s | ratio | same-path ratio | defaults speedup "
             "| wall ratio | cost vs PGD-K |",
             "|---|---|---|---|---|---|---|---|"]
    other = "wall" if clock == "cpu" else "cpu"
    for m in r["methods"]:
        c = m[clock]
        cost = f"{m['cost_vs_pgd']:.3f}" if "cost_vs_pgd" in m else ""
        same = spread(c["same_ratio"]) if "same_ratio" in c else "(= ratio)"
        gain = spread(c["defaults_speedup"]) if "defaults_speedup" in c else ""
        lines.append(f"| {m['method']} | {spread(c['advcore_img_s'], '{:.1f}')} | "
                     f"{spread(c['handwritten_img_s'], '{:.1f}')} | {spread(c['ratio'])} | {same} | {gain} | "
                     f"{spread(m[other]['ratio'])} | {cost} |")
    sames = [m[clock]["same_ratio"]["median"] for m in r["methods"] if "same_ratio" in m[clock]]
    ratios = [m[clock]["ratio"]["median"] for m in r["methods"]]
    lines += ["", f"Medians of `ratio`: {min(ratios):.3f} to {max(ratios):.3f} over {len(ratios)} methods"
              + (f"; of `same-path ratio`: {min(sames):.3f} to {max(sames):.3f}, {sum(x >= 1 for x in sames)} "
                 f"of {len(sames)} at or above 1." if sames else ".")]
    below = [m for m in r["methods"] if m[clock]["ratio"]["median"] < 1]
    lines.append("Rows with `ratio` below 1: " + (", ".join(
        f"{m['method']} {spread(m[clock]['ratio'])}" + (", its whole bracket below 1" if m[clock]["ratio"]["max"] < 1
                                                        else ", its bracket reaching 1")
        for m in below) if below else "none") + ".")
    for n in r.get("noise", []):
        lines.append(f"Noise floor, two copies of the hand-written {n['method']} loop timed the same way: "
                     f"ratio {spread(n[clock]['ratio'])}.")
    if r["options"]:
        lines += ["", "Speed options (`speedup` = advcore with the option / advcore on the plain path, medians):", "",
                  "| method + option | advcore img/s | ratio | speedup | first step s |", "|---|---|---|---|---|"]
        for m in r["options"]:
            c = m[clock]
            lines.append(f"| {m['method']} + {m['option']} | {spread(c['advcore_img_s'], '{:.1f}')} | "
                         f"{spread(c['ratio'])} | {m['speedup']:.3f} | {m['warmup_s']['advcore']:.2f} |")
    lines += [""] + [f"* {n}" for n in r["notes"]]
    return "\n".join(lines)


def render_host_memory(r: dict | None) -> str:
    if r is None:
        return "_Not measured yet: run `python benchmarks/report.py`._"
    lines = [f"Commands: `{r['command'][0]}` and `{r['command'][1]}`  ", f"Machine: {machine_line(r['machine'])}  ",
             f"Clock: {r['clock']} time; images/s medians [min-max] of each process.", "",
             "| method | advcore img/s kept | advcore img/s glibc defaults | advcore speedup | "
             "hand-written speedup |", "|---|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['method']} | {spread(row['kept']['advcore_img_s'], '{:.1f}')} | "
                     f"{spread(row['system']['advcore_img_s'], '{:.1f}')} | {row['advcore_speedup']:.3f} | "
                     f"{row['handwritten_speedup']:.3f} |")
    return "\n".join(lines)


def render_scaling(r: dict | None) -> str:
    if r is None:
        return "_Not measured yet: run `python benchmarks/report.py`._"
    lines = [f"Machine: {machine_line(r['machine'])}. pgd-at (PGD-10, small-cnn width 32, digits, batch 128 "
             f"unless the row says otherwise); {r['note']}.", "",
             "| axis | setting | ms/image (CPU time) | ms/image (wall) | ratio vs hand-written | peak RSS MiB |",
             "|---|---|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['axis']} | `{row['setting']}` | {spread(row['ms_per_image_cpu'], '{:.2f}')} | "
                     f"{spread(row['ms_per_image_wall'], '{:.2f}')} | {spread(row['ratio_cpu'])} | "
                     f"{row['peak_rss_kib'] / 1024:.0f} |")
    lines += ["", "Peak RSS of one benchmark process per method (advcore's run and the hand-written twin's "
              "copy of the model, digits):", "", "| method | peak RSS MiB |", "|---|---|"]
    lines += [f"| {m['method']} | {m['peak_rss_kib'] / 1024:.0f} |" for m in r["memory"]]
    return "\n".join(lines)


def render_startup(r: dict | None) -> str:
    if r is None:
        return "_Not measured yet: run `python benchmarks/report.py`._"
    lines = ["| command | min s | median s | max s | runs | exit |", "|---|---|---|---|---|---|"]
    for name, c in r["commands"].items():
        lines.append(f"| `{c['command']}` | {c['min']:.2f} | {c['median']:.2f} | {c['max']:.2f} | {c['runs']} | "
                     f"{','.join(map(str, c['exit_codes']))} |")
    return "\n".join(lines)


def render_eval_cost(r: dict | None) -> str:
    if r is None:
        return "_Not measured yet: run `python benchmarks/report.py`._"
    lines = [f"Command: `{r['command']}`: {r['eval_s']:.1f} s of evaluation in {r['epoch_s']:.1f} s of epochs "
             f"(**{r['eval_share']:.1%}**).", "", "| epoch | seconds | of which evaluation | samples |",
             "|---|---|---|---|"]
    lines += [f"| {e['epoch']} | {e['seconds']:.2f} | {e['eval_seconds'] or 0:.2f} | {e['eval_n']} |"
              for e in r["epochs"]]
    return "\n".join(lines)


def render_gpu(r: dict | None) -> str:
    if r is None:
        return ("_No GPU numbers yet: no GPU was available for this work._ The commands in the next "
                "paragraph produce `benchmarks/results/gpu.json`; `python benchmarks/report.py --render-only` "
                "then puts its table here.")
    m = r["machine"]
    lines = [f"Command: `{r['command']}`  ", f"Device: {m['device']}, CUDA {m.get('cuda')}, torch {m['torch']}, "
             f"host {m['cpu']}; wall clock after a synchronize, median over {r['settings']['repeats']} rounds "
             f"[min-max].", "",
             "| arch | batch | method | mode | advcore img/s | ratio vs hand-written | epoch s (50k) | compile s | peak GiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for x in r["results"]:
        w = x["wall"]
        peak = f"{x['peak_gpu_bytes'] / 2**30:.2f}" if x["peak_gpu_bytes"] is not None else ""
        comp = f"{x['compile_s']:.1f}" if x["compile_s"] is not None else ""
        lines.append(f"| {x['arch']} | {x['batch_size']} | {x['method']} | {x['mode']} | "
                     f"{spread(w['advcore_img_s'], '{:.0f}')} | {spread(w['ratio'])} | "
                     f"{spread(x['epoch_s'], '{:.1f}')} | {comp} | {peak} |")
    if r["data_path"]:
        lines += ["", "| arch | batch | on-device img/s | host loader img/s | speedup |", "|---|---|---|---|---|"]
        for d in r["data_path"]:
            lines.append(f"| {d['arch']} | {d['batch_size']} | {spread(d['on_device']['wall']['advcore_img_s'], '{:.0f}')} "
                         f"| {spread(d['host']['wall']['advcore_img_s'], '{:.0f}')} | {d['speedup']:.3f} |")
    return "\n".join(lines)


def render(results: Path = RESULTS, template: Path = TEMPLATE) -> str:
    """The page from the template and whichever JSON files ``results`` holds."""
    def load(name: str) -> dict | None:
        path = results / name
        return json.loads(path.read_text()) if path.exists() else None

    text = template.read_text()
    parts = {"overhead": render_overhead(load("overhead.json")), "scaling": render_scaling(load("scaling.json")),
             "startup": render_startup(load("startup.json")), "eval_cost": render_eval_cost(load("eval_cost.json")),
             "host_memory": render_host_memory(load("host_memory.json")),
             "gpu": render_gpu(load("gpu.json"))}
    for key, value in parts.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="every part in its smallest setting")
    parser.add_argument("--render-only", action="store_true", help="only render docs/performance.md from the JSON")
    parser.add_argument("--parts", default="eval_cost,startup,overhead,host_memory,scaling")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    if not args.render_only:
        RESULTS.mkdir(exist_ok=True)
        for part in args.parts.split(","):
            fn = globals().get(f"part_{part}")
            if fn is None:
                parser.error(f"--parts: unknown part {part!r}; choose from eval_cost, startup, overhead, "
                                  f"host_memory, scaling")
            t = time.perf_counter()
            result = fn(args)
            result.setdefault("generated_by", "python benchmarks/report.py" + (" --quick" if args.quick else ""))
            (RESULTS / f"{part}.json").write_text(json.dumps(result, indent=1) + "\n")
            print(f"# {part}: {time.perf_counter() - t:.0f} s", flush=True)
    PAGE.write_text(render())
    print(f"# wrote {PAGE.relative_to(REPO)} ({time.perf_counter() - began:.0f} s in all)", flush=True)


if __name__ == "__main__":
    main()
