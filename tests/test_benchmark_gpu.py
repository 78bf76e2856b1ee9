"""benchmarks/gpu.py and benchmarks/nccl_resume.py in their smallest CPU settings (the GPU
numbers come from the commands in docs/performance.md on a CUDA machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
ENV = dict(os.environ, OMP_NUM_THREADS="1", ADVCORE_PROGRESS="0")


def test_gpu_benchmark_cpu_fallback_writes_every_field(tmp_path):
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, str(BENCH / "gpu.py"), "--quick", "--json", str(out)],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert {"cpu", "cores", "torch", "device", "threads"} <= set(report["machine"])
    assert report["machine"]["device"] == "cpu" and report["command"].endswith(f"--quick --json {out}")
    rows = {(r["method"], r["mode"]): r for r in report["results"]}
    assert set(rows) == {(m, o) for m in ("pgd-at", "fast-atta") for o in ("fp32", "channels_last")}
    for r in rows.values():
        for clock in ("cpu", "wall"):
            for key in ("advcore_img_s", "handwritten_img_s", "ratio"):
                s = r[clock][key]
                assert s["rounds"] == 2 and 0 < s["min"] <= s["median"] <= s["max"]
        rate = r["wall"]["advcore_img_s"]["median"]
        assert r["epoch_s"]["median"] == pytest.approx(50_000 / rate)
        assert r["epoch_s"]["min"] <= r["epoch_s"]["median"] <= r["epoch_s"]["max"]
        assert r["peak_gpu_bytes"] is None and r["compile_s"] is None and r["warmup_s"]["advcore"] > 0
        assert r["images_per_round"] == 8  # one batch of 8
    assert any("data path" in s for s in report["skipped"])  # on the CPU the data already lives there
    assert "small-cnn b8 pgd-at fp32: advcore" in done.stdout


def test_gpu_benchmark_refuses_an_unknown_mode_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, str(BENCH / "gpu.py"), "--modes", "fp16", "--archs", "small-cnn",
                           "--batch-sizes", "8", "--methods", "pgd-at"], capture_output=True, text=True, env=ENV,
                          timeout=300)
    assert done.returncode == 2
    assert "--modes: unknown mode 'fp16'; choose from fp32, tf32, bf16, channels_last, compile" in done.stderr
    assert "Traceback" not in done.stderr


def test_one_process_torchrun_trains_checkpoints_and_resumes_bit_exactly(tmp_path):
    """nccl on a GPU; here the gloo fallback, the same code path (a one-process group, DDP)."""
    out = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                           str(BENCH / "nccl_resume.py"), "--out", str(tmp_path / "runs"), "--json", str(out)],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["backend"] == "gloo" and report["world_size"] == 1 and report["resumed_from_epoch"] == 1
    assert report["equal"] is True and report["tensors"] > 0


def test_nccl_resume_outside_torchrun_says_how_to_start_it(tmp_path):
    env = {k: v for k, v in ENV.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    done = subprocess.run([sys.executable, str(BENCH / "nccl_resume.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == ("nccl_resume.py: start it with torchrun --standalone --nproc_per_node 1 "
                                   "benchmarks/nccl_resume.py ...")
