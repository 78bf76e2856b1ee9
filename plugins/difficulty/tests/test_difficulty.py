"""Instance difficulty: the loss history, Eq. 1, the D-distance, subsets and `advcore analyze`."""

import csv
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from advcore.testing import run_cli
from advcore import DataError, Dataset, load_config, subset_indices
from advcore.errors import ConfigError
from advcore_difficulty.scores import (LOSS_SUM, VISITS, DifficultyError, d_distance, difficulty_scores, load_table,
                                       ranked_by_difficulty)
from advcore.testing import tiny_batch, tiny_config, tiny_run
from advcore.testing import train, train_step

os.environ.setdefault("ADVCORE_PROGRESS", "0")
torch.set_num_threads(1)
FROZEN = {"lr": 1e-12, "weight_decay": 0.0, "momentum": 0.0, "schedule": "constant"}


def reference_difficulty(losses):
    """Eq. 1 literally: P(L(x) < L(e)) + 1/2 P(L(x) = L(e)) with e uniform over the set."""
    n = len(losses)
    return [sum((a < b) + 0.5 * (a == b) for b in losses) / n for a in losses]


def test_difficulty_is_equation_one():
    losses = [1.0, 3.0, 3.0, 0.5, 2.0, 1.0]
    assert difficulty_scores(torch.tensor(losses)).tolist() == pytest.approx(reference_difficulty(losses))
    assert difficulty_scores(torch.tensor(losses)).tolist()[3] == pytest.approx(1 - 0.5 / 6)  # easiest


def test_d_distance_is_the_mean_absolute_difference():
    d1, d2 = torch.tensor([0.1, 0.5, 0.9]), torch.tensor([0.2, 0.5, 0.6])
    assert d_distance(d1, d2) == pytest.approx((0.1 + 0.0 + 0.3) / 3)
    with pytest.raises(DifficultyError, match="same samples"):
        d_distance(d1, d2[:2])


def test_the_plugin_sums_the_training_loss_per_sample_and_epoch():
    run = tiny_run(["pgd-at", "difficulty"], optim=FROZEN)
    batch = tiny_batch(run, 16)
    step = train_step(run, batch, 1, 0)
    with torch.no_grad():
        ce = F.cross_entropy(run.model(step.examples["adv"]), step.y, reduction="none")
    assert torch.allclose(run.state[LOSS_SUM][:16, 1], ce, atol=1e-5)
    assert run.state[VISITS][:16].tolist() == [[0, 1]] * 16 and run.state[VISITS][16:].sum() == 0
    second = train_step(run, batch, 1, 1)
    with torch.no_grad():
        ce2 = F.cross_entropy(run.model(second.examples["adv"]), second.y, reduction="none")
    assert torch.allclose(run.state[LOSS_SUM][:16, 1], ce + ce2, atol=1e-4)
    assert run.state[VISITS][:16, 1].tolist() == [2] * 16


def test_error01_mode_counts_misclassified_visits():
    """App. D.1: the average 0-1 error of the trained-on input as the loss behind Eq. 1."""
    run = tiny_run(["pgd-at", "difficulty"], {"difficulty": {"loss": "error01"}}, optim=FROZEN)
    batch = tiny_batch(run, 16)
    step = train_step(run, batch, 0, 0)
    with torch.no_grad():
        wrong = (run.model(step.examples["adv"]).argmax(1) != step.y).float()
    assert torch.equal(run.state[LOSS_SUM][:16, 0], wrong) and 0 < wrong.sum() < 16  # the test can tell
    second = train_step(run, batch, 0, 1)
    with torch.no_grad():
        wrong2 = (run.model(second.examples["adv"]).argmax(1) != second.y).float()
    assert torch.equal(run.state[LOSS_SUM][:16, 0], wrong + wrong2)
    assert run.state[VISITS][:16, 0].tolist() == [2] * 16


def test_terms_mode_records_each_samples_share_of_the_objective():
    run = tiny_run(["trades", "difficulty"], {"difficulty": {"loss": "terms"}, "trades": {"beta": 2.0}}, optim=FROZEN)
    step = train_step(run, tiny_batch(run, 16), 0, 0)
    recorded = run.state[LOSS_SUM][:16, 0]
    assert recorded.mean().item() == pytest.approx(step.loss.item(), rel=1e-5)


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    """Two PGD-AT runs on the same 512 digits that differ only in the seed (init, order, attack starts)."""
    root = tmp_path_factory.mktemp("difficulty")
    for seed in (0, 1):
        cfg = tiny_config(["pgd-at", "difficulty"], epochs=12, seed=seed, data={"subset": 512, "batch_size": 32},
                          attack={"steps": 2, "eps": 0.05}, optim={"lr": 0.05}, eval={"n": 32, "pgd_steps": 1, "every": 12})
        train(cfg, root / f"seed{seed}", log=lambda line: None)
    return root / "seed0", root / "seed1"


def test_two_seeds_agree_on_instance_difficulty(two_seeds):
    t0, t1 = (load_table(run)[0] for run in two_seeds)
    assert len(t0) == len(t1) == 512 and torch.equal(t0.index, t1.index)
    d0, d1 = t0.aligned(t1)
    distance = d_distance(d0, d1)
    shuffled = d_distance(d0, d1[torch.randperm(512, generator=torch.Generator().manual_seed(0))])
    assert shuffled == pytest.approx(1 / 3, abs=0.05)  # unrelated orderings
    assert distance < 0.6 * shuffled
    hardest = d0.argsort()[:51]  # the hardest tenth under seed 0 is hard under seed 1 too
    assert d1[hardest].mean() < 0.3


def test_analyze_difficulty_writes_the_csv_and_the_d_distance(two_seeds):
    a, b = two_seeds
    result = run_cli(["analyze", "difficulty", str(a), "--compare", str(b), "--groups", "2"])
    assert result.exit_code == 0, result.output
    assert "512 samples" in result.output and "D-distance to" in result.output
    rows = list(csv.DictReader(open(a / "difficulty.csv")))
    assert len(rows) == 512 and set(rows[0]) == {"index", "label", "loss", "difficulty", "visits"}
    assert {r["visits"] for r in rows} == {"12"}
    table = load_table(a)[0]
    assert [float(r["difficulty"]) for r in rows[:5]] == pytest.approx(table.difficulty[:5].tolist(), abs=1e-6)


def test_easiest_and_hardest_subsets_are_class_balanced_by_difficulty(two_seeds, tmp_path):
    a, _ = two_seeds
    run_cli(["analyze", "difficulty", str(a), "--csv", str(tmp_path / "d.csv")])
    table = load_table(a)[0]
    ranking = {"difficulty": {"file": str(tmp_path / "d.csv")}}
    run = tiny_run(["pgd-at", "difficulty"], ranking, data={"subset": "easiest:100"})
    easy = run.loader.indices
    hard = tiny_run(["pgd-at", "difficulty"], ranking, data={"subset": "hardest:100"}).loader.indices
    labels = run.train_set.labels
    assert torch.bincount(labels[easy], minlength=10).tolist() == [10] * 10
    assert torch.bincount(labels[hard], minlength=10).tolist() == [10] * 10
    d = dict(zip(table.index.tolist(), table.difficulty.tolist()))
    for c in range(10):  # per class: every chosen easy sample is at least as easy as every unchosen one
        ranked = [i for i in d if labels[i] == c]
        chosen = [i for i in easy.tolist() if labels[i] == c]
        rest = [d[i] for i in ranked if i not in chosen]
        assert min(d[i] for i in chosen) >= max(rest)
        assert max(d[i] for i in hard.tolist() if labels[i] == c) <= min(d[i] for i in chosen)


def test_random_subset_is_class_balanced_and_seeded():
    labels = torch.arange(100) % 4
    ds = Dataset(torch.zeros(100, 1, 2, 2, dtype=torch.uint8), labels, 4, "toy")
    a = subset_indices("random:10", ds, seed=3)
    assert torch.bincount(labels[a]).tolist() == [3, 3, 2, 2]
    assert torch.equal(a, subset_indices("random:10", ds, seed=3))
    assert not torch.equal(a, subset_indices("random:10", ds, seed=4))


def test_subset_errors_name_the_fix(tmp_path):
    ds = Dataset(torch.zeros(8, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1] * 4), 2, "toy")
    with pytest.raises(DifficultyError, match="needs options.difficulty.file"):
        ranked_by_difficulty("easiest:4", ds, None)
    with pytest.raises(DifficultyError, match="does not exist"):
        ranked_by_difficulty("hardest:4", ds, tmp_path / "missing.csv")
    (tmp_path / "d.csv").write_text("index,label,loss,difficulty,visits\n0,1,0.5,0.5,1\n")
    with pytest.raises(DifficultyError, match="labels differ"):
        ranked_by_difficulty("easiest:2", ds, tmp_path / "d.csv")
    (tmp_path / "d.csv").write_text("index,label,loss,difficulty,visits\n0,0,0.5,0.5,1\n")
    with pytest.raises(DataError, match="class 0 has 1 ranked samples but 2"):
        ranked_by_difficulty("easiest:4", ds, tmp_path / "d.csv")
    with pytest.raises(DataError, match="no enabled plugin ranks 'easiest' subsets"):
        subset_indices("easiest:4", ds)
    with pytest.raises(ConfigError, match=r"data\.subset: .*a positive count N, random:N, or KIND:N"):
        load_config(overrides=["data.subset=easiest:0"])
    assert load_config(overrides=["data.subset=40"]).data.subset == 40


def test_a_ranked_subset_without_the_plugin_is_one_line(tmp_path):
    """The core does not rank easiest:N itself: without --plugin difficulty the run refuses, in one line."""
    proc = subprocess.run([sys.executable, "-m", "advcore", "train", "--plugin", "pgd-at", "--subset", "easiest:10",
                           "--epochs", "1", "--set", "device=cpu"], capture_output=True, text=True, cwd=tmp_path,
                          env=dict(os.environ, ADVCORE_PROGRESS="0", OMP_NUM_THREADS="1"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith(
        "data.subset easiest:10: no enabled plugin ranks 'easiest' subsets; enable the plugin that provides it "
        "(advcore plugins lists them) or use N or random:N")


def test_analyze_without_history_is_one_line(tmp_path):
    cfg = tiny_config(["pgd-at"], epochs=1, data={"subset": 32}, attack={"steps": 1}, eval={"n": 8, "pgd_steps": 1})
    train(cfg, tmp_path / "plain", log=lambda line: None)
    result = run_cli(["analyze", "difficulty", str(tmp_path / "plain")])
    assert result.exit_code != 0
    assert "no per-sample loss history; train the run with --plugin difficulty" in str(result.exception)
