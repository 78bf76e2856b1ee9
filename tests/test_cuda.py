"""The CPU suite's correctness checks on a CUDA device (``pytest -m cuda``; skipped without one).

The oracle-style loss tests of tests/test_baselines.py run with their runs on CUDA, every
built-in plugin's conformance kit runs on CUDA (its determinism and checkpoint round-trip
checks included), and the bit-exact mid-epoch resume of tests/test_reliability.py runs with
``device=cuda`` under deterministic algorithms (cuBLAS needs CUBLAS_WORKSPACE_CONFIG set
before its first call, hence at import).
"""

from __future__ import annotations

import os
import sys
from functools import partial
from pathlib import Path

import pytest
import torch

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import test_baselines  # noqa: E402
import test_reliability  # noqa: E402

from advcore.runtime import checkpoint as ckpt  # noqa: E402
from advcore.kernel.plugins import installed_plugins  # noqa: E402
from advcore.testing import check_plugin, tiny_run  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def built_in_plugins() -> list[str]:
    """Installed plugins whose package lives in this repository's plugins/ folder."""
    names = []
    for name, plugin in installed_plugins().items():
        try:
            where = Path(plugin.load().__file__).resolve()
        except Exception:  # noqa: BLE001 - a plugin that does not import is left to the CPU suite
            continue
        if REPO / "plugins" in where.parents:
            names.append(name)
    return sorted(names)


ORACLES = [test_baselines.test_trades_with_beta_zero_is_clean_ce,
           test_baselines.test_trades_loss_is_ce_plus_beta_kl_clean_to_adv,
           test_baselines.test_pgd_at_loss_is_ce_on_adversarial_examples,
           test_baselines.test_mart_loss_matches_reference_formula,
           test_baselines.test_alp_loss_matches_reference_formula,
           test_baselines.test_standard_training_makes_no_adversarial_examples,
           test_baselines.test_free_replays_each_batch_and_carries_delta,
           test_baselines.test_fgsm_rs_is_one_signed_step_of_1_25_eps_from_a_uniform_start]


@pytest.fixture
def runs_on_cuda(monkeypatch):
    """test_baselines builds its runs with ``tiny_run``; give them ``device=cuda``."""
    monkeypatch.setattr(test_baselines, "tiny_run", partial(tiny_run, device="cuda"))
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)


@pytest.mark.parametrize("oracle", ORACLES, ids=lambda f: f.__name__.removeprefix("test_"))
def test_oracle_losses_on_cuda(oracle, runs_on_cuda):
    oracle()


@pytest.mark.parametrize("adversary", ["pgd", "fgsm-rs", "free"])
@pytest.mark.parametrize("objective", ["pgd-at", "trades"])
def test_adversaries_stay_in_the_ball_on_cuda(objective, adversary, runs_on_cuda):
    test_baselines.test_adversaries_stay_in_the_eps_ball_and_input_range(adversary, objective)


def test_the_runs_really_are_on_cuda(runs_on_cuda):
    run, step = test_baselines.one_step(["pgd-at"])
    assert step.x.is_cuda and next(run.model.parameters()).is_cuda and step.examples["adv"].is_cuda


@pytest.mark.parametrize("name", built_in_plugins())
def test_conformance_kit_on_cuda(name):
    overrides = {"attack": {"steps": 1}} if name in ("cons-at", "raat") else {}
    report = check_plugin(name, device="cuda", deterministic=True, **overrides)
    assert {"contracts", "determinism", "checkpoint round-trip"} <= set(report.passed)


def test_sigterm_mid_epoch_resume_is_bitwise_equal_on_cuda(tmp_path, monkeypatch):
    monkeypatch.setattr(test_reliability, "ARGS", test_reliability.ARGS + ["--set", "device=cuda"])
    test_reliability.test_sigterm_mid_epoch_checkpoints_and_resume_is_bitwise_equal(tmp_path)
    manifest, tensors = ckpt.load_checkpoint(tmp_path / "full" / "checkpoints" / "last")
    assert manifest["config"]["device"] == "cuda"
