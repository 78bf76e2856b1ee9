"""The benchmark's hand-written loops compute what advcore computes, so its ratios compare like with like."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pytest
import torch

from advcore.kernel.plugins import installed_plugins
from advcore.engine import train_step

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import overhead  # noqa: E402
from handwritten import LOOPS  # noqa: E402

ARGS = argparse.Namespace(dataset="digits", batch_size=32, arch="small-cnn", width=8, steps=3, device="cpu")


class FixedBeta:
    """Stands in for torch.distributions.Beta: RAAT's mixing weight without a random stream."""

    def __init__(self, *args) -> None:
        pass

    def sample(self) -> torch.Tensor:
        return torch.tensor(0.7)


def both_loops(method: str, tmp_path: Path):
    std = overhead.std_network(ARGS, tmp_path) if "hat" in method.split("+") else None
    run, loader = overhead.build(method, None, ARGS, std)
    ctx = overhead.handwritten_context(run, None, ARGS.steps)
    return run, next(iter(loader.epoch(0))), ctx, LOOPS[method](ctx)


@pytest.mark.parametrize("method", overhead.METHODS)
def test_handwritten_step_matches_advcore(method, tmp_path, monkeypatch):
    missing = [p for p in method.split("+") if p not in installed_plugins()]
    if missing:
        pytest.skip(f"plugin {missing[0]} not installed")
    if "raat" in method.split("+"):  # the plugin draws its Beta weights from its own seeded stream
        import advcore_raat

        monkeypatch.setattr(torch.distributions, "Beta", FixedBeta)
        monkeypatch.setattr(advcore_raat, "mixing_weights", lambda n, *_: torch.full((n,), 0.7))
    run, batch, ctx, hand = both_loops(method, tmp_path)
    model = ctx.model
    before = [p.detach().clone() for p in model.parameters()]
    epoch = overhead.training_epoch(run)  # after the warm-ups (iaat's loop is its search phase)
    assert ctx.epoch == epoch
    torch.manual_seed(7)
    train_step(run, batch, epoch, 0)
    torch.manual_seed(7)
    hand(batch.x, batch.y, batch.index)
    moved = max((p - q).abs().max().item() for p, q in zip(run.model.parameters(), before))
    diff = max((p - q).abs().max().item() for p, q in zip(run.model.parameters(), model.parameters()))
    # one step moves weights by ~2e-3; a wrong constant (TRADES beta 5 for 6) leaves 4e-5 between them
    assert moved > 1e-3
    assert diff < 1e-6, f"{method}: hand-written step differs from advcore's by {diff:.2e}"
    # per-sample state (fast-atta's cache, gairat's kappa, fat's steps, adaptive targets, the loss
    # history, iaat's radii) lives in the twin's own tensors, indexed by dataset index like run.state
    mirrored = getattr(hand, "state", dict)()
    kept = set(run.state) - {"iaat.seen"}  # which samples were visited: only the epoch's mean-radius metric reads it
    assert kept <= set(mirrored), f"{method}: the twin keeps no {sorted(kept - set(mirrored))}"
    for name in kept:
        ours, theirs = run.state[name], mirrored[name]
        assert ours.shape == theirs.shape and torch.allclose(ours.double(), theirs.double(), atol=1e-5), name


def test_overhead_prints_medians_with_spread_and_writes_the_json(capsys, tmp_path):
    out_json = tmp_path / "overhead.json"
    report = overhead.main(["--methods", "pgd-at,fast-atta", "--options", "", "--batches", "2", "--repeats", "3",
                            "--width", "8", "--steps", "2", "--json", str(out_json)])
    out = capsys.readouterr().out
    for method in ("pgd-at", "fast-atta"):
        found = re.search(rf"^{method} advcore_img_s=([\d.]+) handwritten_img_s=([\d.]+) ratio=([\d.]+) "
                          rf"\[([\d.]+)-([\d.]+)\] same_ratio=([\d.]+) \[([\d.]+)-([\d.]+)\] "
                          rf"wall_ratio=([\d.]+) \[([\d.]+)-([\d.]+)\]$", out, re.M)
        assert found, out
        ratio, low, high, same, slow, shigh, wall, wlow, whigh = map(float, found.groups()[2:])
        assert low <= ratio <= high and slow <= same <= shigh and wlow <= wall <= whigh
    cost = re.search(r"^# fast-atta cost_vs_pgd=([\d.]+) \(step time over pgd-at with PGD-2\)$", out, re.M)
    assert cost and 0 < float(cost.group(1)) < 1.5, out
    written = json.loads(out_json.read_text())
    assert written == json.loads(json.dumps(report))
    assert {"cpu", "cores", "torch", "device"} <= set(written["machine"])
    first = written["methods"][0]
    assert first["method"] == "pgd-at" and first["cpu"]["ratio"]["rounds"] == 3
    rounds = first["cpu"]
    # the ratio's median is of per-round ratios; images/s medians bound it loosely
    assert rounds["advcore_img_s"]["min"] <= rounds["advcore_img_s"]["median"] <= rounds["advcore_img_s"]["max"]
    assert first["epoch_s"] == pytest.approx(50_000 / rounds["advcore_img_s"]["median"])
    # on the CPU advcore's defaults (channels-last) differ from the twin's plain path: both are timed
    assert {"advcore_img_s", "same_img_s", "handwritten_img_s", "same_ratio", "defaults_speedup"} <= set(rounds)
    assert rounds["same_img_s"]["min"] <= rounds["same_img_s"]["median"] <= rounds["same_img_s"]["max"]


def test_overhead_names_an_unknown_method_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        overhead.main(["--methods", "mart+fast-atta", "--options", ""])
    assert exit_.value.code == 2
    assert "--methods: no hand-written loop for 'mart+fast-atta'" in capsys.readouterr().err


@pytest.mark.parametrize("loops", [("advcore", "handwritten"), ("advcore", "same", "handwritten")])
def test_interleaving_gives_every_loop_every_place_equally(loops):
    calls: list[str] = []
    steps = {who: (lambda i, _, who=who: calls.append(who)) for who in loops}
    for _ in range(2):  # two rounds: a round's last batch meets the next round's first
        overhead.interleaved(steps, 6, 1, torch.device("cpu"))
    k = len(loops)
    batches = [calls[i:i + k] for i in range(0, len(calls), k)]
    assert all(sorted(b) == sorted(loops) for b in batches) and len(batches) == 12
    for place in range(k):
        assert sorted(b[place] for b in batches) == sorted(loops * (12 // k)), place
    cycle = calls[1:] + calls[:1]  # the rounds repeat: the last step meets the next round's first
    repeats = {who: sum(a == b == who for a, b in zip(calls, cycle)) for who in loops}
    if k == 3:  # with three loops none runs twice in a row on caches it just warmed
        assert set(repeats.values()) == {0}, repeats
    else:  # ABBA: each repeats equally often
        assert len(set(repeats.values())) == 1, repeats
