"""benchmarks/report.py: docs/performance.md is generated from the committed JSON, and the renderer
puts each file's figures (with command, machine and spread) on the page."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import report  # noqa: E402


def test_the_page_is_the_rendering_of_the_committed_results():
    assert (REPO / "docs" / "performance.md").read_text() == report.render(), \
        "docs/performance.md differs from its template + benchmarks/results; run python benchmarks/report.py --render-only"


def test_every_placeholder_is_filled_and_missing_results_say_how_to_make_them(tmp_path):
    text = report.render(tmp_path)  # an empty results folder
    assert "{{" not in text
    assert text.count("_Not measured yet: run `python benchmarks/report.py`._") == 5
    assert "_No GPU numbers yet" in text and "python benchmarks/gpu.py --json benchmarks/results/gpu.json" in text


def spread(median, low, high):
    return {"median": median, "min": low, "max": high, "rounds": 3}


def test_a_gpu_result_becomes_a_table_row_with_device_spread_and_memory(tmp_path):
    stats = {"advcore_img_s": spread(3312.4, 3290.0, 3330.9), "handwritten_img_s": spread(3300.0, 3280.0, 3320.0),
             "ratio": spread(1.004, 0.998, 1.010)}
    row = {"arch": "resnet18", "batch_size": 512, "method": "pgd-at", "mode": "compile", "wall": stats, "cpu": stats,
           "epoch_s": spread(15.09, 15.01, 15.2), "compile_s": 61.25, "peak_gpu_bytes": 3 * 2**30,
           "warmup_s": {"advcore": 61.25, "handwritten": 60.0}}
    host = copy.deepcopy(row)
    host["wall"]["advcore_img_s"] = spread(2000.0, 1990.0, 2010.0)
    gpu = {"command": "python benchmarks/gpu.py --json benchmarks/results/gpu.json",
           "machine": {"device": "NVIDIA H200", "cuda": "13.0", "torch": "2.14.1", "cpu": "Xeon", "cores": 16},
           "settings": {"repeats": 3}, "results": [row],
           "data_path": [{"arch": "resnet18", "batch_size": 512, "on_device": row, "host": host, "speedup": 1.656}]}
    (tmp_path / "gpu.json").write_text(json.dumps(gpu))
    text = report.render(tmp_path)
    assert "Device: NVIDIA H200, CUDA 13.0, torch 2.14.1" in text
    assert ("| resnet18 | 512 | pgd-at | compile | 3312 [3290-3331] | 1.004 [0.998-1.010] | 15.1 [15.0-15.2] "
            "| 61.2 | 3.00 |") in text
    assert "| resnet18 | 512 | 3312 [3290-3331] | 2000 [1990-2010] | 1.656 |" in text


def test_milliseconds_per_image_take_the_fastest_round_as_the_minimum():
    ms = report.per_image(spread(500.0, 400.0, 1000.0))
    assert ms == pytest.approx({"median": 2.0, "min": 1.0, "max": 2.5})


def test_eval_cost_part_reads_the_runs_own_metrics(monkeypatch):
    import argparse

    result = report.part_eval_cost(argparse.Namespace(quick=True))
    assert result["exit"] == 0 and [e["eval_n"] for e in result["epochs"]] == [64, 359]
    assert result["eval_s"] == pytest.approx(sum(e["eval_seconds"] for e in result["epochs"]))
    assert 0 < result["eval_share"] < 1 and result["command"].startswith("advcore train --plugin pgd-at --out DIR")
