"""One combination, one answer: the ``--plugin`` order never changes what a run computes.

Every pair of built-in plugins that resolves, and the documented triples in every
permutation, trains a few steps from the same seed in each order; the model, the optimizer,
the per-sample state, the plugins' own state and the epoch metrics must be bit-identical.
Pairs that cannot run together must be refused with the same one-line error in both orders.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from advcore.errors import AdvcoreError
from advcore.kernel.plugins import installed_plugins
from advcore.testing import tiny_batch, tiny_run
from advcore.engine import train_step

REPO = Path(__file__).resolve().parents[1]
SETUP = {"data": {"batch_size": 8, "subset": 48}, "model": {"arch": "small-cnn", "width": 4},
         "attack": {"steps": 2}, "eval": {"n": 8, "pgd_steps": 1}, "epochs": 2}


def builtin_plugins() -> list[str]:
    names = []
    for name, plugin in installed_plugins().items():
        if plugin.package.startswith("advcore-") and (REPO / "plugins" / name).is_dir():
            names.append(name)
    return sorted(names)


BUILTINS = builtin_plugins()
DOCUMENTED = [("raat", "mart"), ("hat", "awp"), ("hat", "fast-atta"), ("fast-atta", "reweight", "adaptive-targets"),
              ("hat", "fat"), ("trades", "gairat")]


def options_for(names, std_checkpoint):
    """Each plugin's conformance options (warm-ups off, so every code path runs in two steps)."""
    options = {}
    for name in names:
        module = installed_plugins()[name].load()
        options[name] = dict(getattr(module, "CONFORMANCE_OPTIONS", {}))
    if "hat" in names:
        options["hat"]["std_checkpoint"] = std_checkpoint
    return options


def outcome(names, std_checkpoint):
    """Everything a few steps leave behind, or the error that refused the combination."""
    metrics = {}
    try:
        run = tiny_run(list(names), options_for(names, std_checkpoint), **SETUP)
        run.hooks.on_epoch_start(run, 0)
        for k, start in enumerate((0, 8, 16)):
            train_step(run, tiny_batch(run, 8, start), 0, k)
        run.hooks.on_epoch_end(run, 0, metrics)
    except AdvcoreError as exc:  # refused (e.g. raat with an objective that makes no attack): one line
        return str(exc)
    tensors = {f"model.{k}": v for k, v in run.model.state_dict().items()}
    for i, s in run.optimizer.state_dict()["state"].items():
        tensors.update({f"optim.{i}.{k}": v for k, v in s.items() if torch.is_tensor(v)})
    tensors.update({f"state.{k}": v for k, v in run.state.state_dict().items()})
    for name, part in run.hooks.state_dict(run).items():
        tensors.update({f"plugin.{name}.{k}": v for k, v in (part.get("tensors") or {}).items()})
    return tensors, metrics


def assert_same(a, b, what):
    if isinstance(a, str) or isinstance(b, str):
        assert a == b, f"{what}: refused differently by order: {a!r} vs {b!r}"
        return
    (ta, ma), (tb, mb) = a, b
    assert sorted(ta) == sorted(tb), f"{what}: different state entries"
    for key in ta:
        assert torch.equal(ta[key], tb[key]), f"{what}: {key} differs between orders"
    assert ma == mb, f"{what}: epoch metrics differ"


@pytest.fixture(scope="module")
def std_checkpoint(tmp_path_factory):
    """One standard network for HAT, so no pair trains its own."""
    from advcore.testing import tiny_config
    from advcore.engine import train

    out = tmp_path_factory.mktemp("std")
    train(tiny_config(["standard"], **{**SETUP, "epochs": 1}), out, log=lambda *_: None)
    return str(out / "checkpoints" / "last")


@pytest.mark.parametrize("pair", list(itertools.combinations(BUILTINS, 2)), ids="+".join)
def test_every_pair_gives_one_answer_in_either_order(pair, std_checkpoint):
    assert_same(outcome(pair, std_checkpoint), outcome(pair[::-1], std_checkpoint), "+".join(pair))


@pytest.mark.parametrize("combo", DOCUMENTED, ids="+".join)
def test_documented_combinations_in_every_permutation(combo, std_checkpoint):
    missing = [n for n in combo if n not in BUILTINS]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")
    first = outcome(combo, std_checkpoint)
    assert not isinstance(first, str), f"{'+'.join(combo)} is documented but refused: {first}"
    for perm in itertools.permutations(combo):
        assert_same(first, outcome(perm, std_checkpoint), "+".join(perm))


def test_the_test_sees_a_difference_when_there_is_one(std_checkpoint):
    """The comparison is not vacuous: another seed changes the state it compares."""
    a = outcome(("trades", "reweight"), std_checkpoint)
    run = tiny_run(["trades", "reweight"], options_for(("trades", "reweight"), std_checkpoint), **{**SETUP, "seed": 1})
    for k, start in enumerate((0, 8, 16)):
        train_step(run, tiny_batch(run, 8, start), 0, k)
    assert any(not torch.equal(v, run.model.state_dict()[k.removeprefix("model.")])
               for k, v in a[0].items() if k.startswith("model."))


def test_the_installed_command_gives_one_answer_for_free_and_raat_in_either_order(tmp_path):
    """The issue's own example, through the real ``advcore`` executable: same checkpoint tensors."""
    import subprocess
    import sys

    from advcore.testing import load_checkpoint

    advcore = Path(sys.executable).with_name("advcore")
    common = ["--epochs", "1", "--subset", "64", "--set", "data.batch_size=16", "--set", "model.width=4",
              "--set", "eval.n=16", "--set", "eval.pgd_steps=1", "--set", "attack.steps=2", "--seed", "0"]
    tensors = []
    for order in (["free", "raat"], ["raat", "free"]):
        out = tmp_path / "-".join(order)
        args = [str(advcore), "train", *[a for name in order for a in ("--plugin", name)], *common, "--out", str(out)]
        subprocess.run(args, check=True, capture_output=True, timeout=300)
        tensors.append(load_checkpoint(out / "checkpoints" / "last")[1])
    a, b = tensors
    assert sorted(a) == sorted(b) and any(k.startswith("plugin.free.") for k in a)
    for key in a:  # model, optimizer, per-sample state, plugin state and the RNG streams
        assert torch.equal(a[key], b[key]), f"{key} differs between --plugin orders"
