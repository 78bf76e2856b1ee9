"""Instance difficulty (Liu et al., "On the impact of hard adversarial instances", Eq. 1).

The ``difficulty`` plugin records, per dataset index and epoch, the sum of the training losses of
a sample's (perturbed) input and how often it was seen, in the per-sample state under the names
below. From that history, L(x) is the sample's average loss over training and

    d(x) = P(L(x) < L(e)) + 1/2 P(L(x) = L(e)),   e ~ U(D)

is 0 for the hardest sample of D and 1 for the easiest. Two difficulty functions are compared
with the D-distance E_x |d1(x) - d2(x)| (App. D.1). Class-balanced easiest/hardest subsets
(Sec. 4.1, ``data.subset = "easiest:N"``) are ranked from a CSV that ``advcore analyze
difficulty`` writes (``options.difficulty.file``). Moved here from the core, which names no method.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import torch

from advcore.errors import AdvcoreError

__all__ = ["LOSS_SUM", "VISITS", "LABEL", "DifficultyError", "DifficultyTable", "difficulty_scores", "d_distance",
           "table_from_state", "load_table", "write_csv", "read_csv", "group_curves", "SUBSET_KINDS",
           "ranked_by_difficulty"]

LOSS_SUM = "difficulty.loss_sum"  # [N, epochs] float: summed training loss of the sample in each epoch
VISITS = "difficulty.visits"      # [N, epochs] int: how many times the sample was trained on in each epoch
LABEL = "difficulty.label"        # [N] int: the label it was trained with (-1: never seen)

SUBSET_KINDS = ("easiest", "hardest")  # data.subset KIND:N this plugin ranks (random:N is the core's)


class DifficultyError(AdvcoreError):
    """A loss history or difficulty file is missing or does not fit the data."""


def difficulty_scores(losses: torch.Tensor) -> torch.Tensor:
    """Eq. 1 for every sample of D at once: the share of D with a larger loss, ties counted half."""
    losses = losses.double().flatten()
    n = losses.numel()
    if n == 0:
        return losses
    ordered = losses.sort().values
    at_most = torch.searchsorted(ordered, losses, right=True)  # #{e: L(e) <= L(x)}
    below = torch.searchsorted(ordered, losses, right=False)  # #{e: L(e) < L(x)}
    return ((n - at_most) + 0.5 * (at_most - below)) / n


def d_distance(d1: torch.Tensor, d2: torch.Tensor) -> float:
    """App. D.1: the mean absolute difference of two difficulty functions over the same samples."""
    if d1.shape != d2.shape or d1.numel() == 0:
        raise DifficultyError(f"D-distance needs two difficulty vectors over the same samples, got "
                              f"{tuple(d1.shape)} and {tuple(d2.shape)}")
    return (d1.double() - d2.double()).abs().mean().item()


@dataclass
class DifficultyTable:
    """The samples that were trained on: dataset index, label, average loss, difficulty, visits."""

    index: torch.Tensor
    label: torch.Tensor
    loss: torch.Tensor
    difficulty: torch.Tensor
    visits: torch.Tensor

    def __len__(self) -> int:
        return int(self.index.numel())

    def aligned(self, other: "DifficultyTable") -> tuple[torch.Tensor, torch.Tensor]:
        """Both tables' difficulties over the samples they share, recomputed within that set."""
        common = torch.tensor(sorted(set(self.index.tolist()) & set(other.index.tolist())), dtype=torch.int64)
        if common.numel() == 0:
            raise DifficultyError("the two runs share no trained samples; compare runs on the same data")

        def scores(t: "DifficultyTable") -> torch.Tensor:
            pos = {int(i): k for k, i in enumerate(t.index.tolist())}
            return difficulty_scores(t.loss[[pos[int(i)] for i in common]])

        return scores(self), scores(other)


def table_from_state(loss_sum: torch.Tensor, visits: torch.Tensor, label: torch.Tensor,
                     epochs: slice | None = None) -> DifficultyTable:
    """L(x) = summed loss / visits over the chosen epochs, for every sample seen at least once."""
    if epochs is not None:
        loss_sum, visits = loss_sum[:, epochs], visits[:, epochs]
    total, count = loss_sum.double().sum(1), visits.sum(1)
    seen = (count > 0).nonzero().squeeze(1)
    if seen.numel() == 0:
        raise DifficultyError("no sample has a recorded loss; train at least one epoch with --plugin difficulty")
    loss = total[seen] / count[seen]
    return DifficultyTable(seen, label[seen].long(), loss, difficulty_scores(loss), count[seen].long())


def load_table(path: str | Path) -> tuple[DifficultyTable, dict[str, torch.Tensor]]:
    """The difficulty table of a run directory or checkpoint, and its raw per-epoch history."""
    from advcore import load_checkpoint

    _, tensors = load_checkpoint(path)
    names = [f"state.{n}" for n in (LOSS_SUM, VISITS, LABEL)]
    if any(n not in tensors for n in names):
        raise DifficultyError(f"{path} has no per-sample loss history; train the run with --plugin difficulty")
    loss_sum, visits, label = (tensors[n] for n in names)
    return table_from_state(loss_sum, visits, label), {"loss_sum": loss_sum, "visits": visits, "label": label}


def write_csv(table: DifficultyTable, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "label", "loss", "difficulty", "visits"])
        for row in zip(table.index.tolist(), table.label.tolist(), table.loss.tolist(),
                       table.difficulty.tolist(), table.visits.tolist()):
            w.writerow([row[0], row[1], f"{row[2]:.6g}", f"{row[3]:.6f}", row[4]])
    return path


def read_csv(path: str | Path) -> DifficultyTable:
    path = Path(path)
    if not path.is_file():
        raise DifficultyError(f"difficulty file {path} does not exist; write it with advcore analyze difficulty RUN")
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        cols = {k: [r[k] for r in rows] for k in ("index", "label", "loss", "difficulty", "visits")}
        return DifficultyTable(torch.tensor([int(v) for v in cols["index"]]), torch.tensor([int(v) for v in cols["label"]]),
                               torch.tensor([float(v) for v in cols["loss"]], dtype=torch.float64),
                               torch.tensor([float(v) for v in cols["difficulty"]], dtype=torch.float64),
                               torch.tensor([int(v) for v in cols["visits"]]))
    except (KeyError, ValueError, TypeError) as exc:
        raise DifficultyError(f"difficulty file {path} is not a CSV from advcore analyze difficulty ({exc}); "
                              "write it again") from None


def group_curves(table: DifficultyTable, loss_sum: torch.Tensor, visits: torch.Tensor,
                 groups: int = 10) -> list[list[float]]:
    """Sec. 4.2: per group G_i = {i/g <= d < (i+1)/g} (G_0 hardest), the average loss in each epoch."""
    which = (table.difficulty * groups).floor().clamp_max(groups - 1).long()
    s, v = loss_sum[table.index].double(), visits[table.index].double()
    curves = []
    for g in range(groups):
        mask = which == g
        curves.append((s[mask].sum(0) / v[mask].sum(0).clamp_min(1)).tolist())
    return curves


# --- training subsets (Sec. 4.1) --------------------------------------------------------------


def ranked_by_difficulty(spec: str, dataset, difficulty_file: str | Path | None) -> torch.Tensor:
    """data.subset easiest:N / hardest:N: per class the N // K samples of largest / smallest d (Sec. 4.1).

    Ranks each class by the difficulty in ``difficulty_file`` (ties: lower index first); the
    class-balanced pick itself is the core's ``ranked_subset``.
    """
    from advcore import ranked_subset

    kind = spec.split(":")[0]
    labels = dataset.labels.cpu()
    if int(spec.split(":")[1]) > labels.numel():
        raise DifficultyError(f"data.subset {spec}: the training set has only {labels.numel()} samples; lower N")
    if difficulty_file is None:
        raise DifficultyError(f"data.subset {spec} needs options.difficulty.file, a CSV written by "
                              "advcore analyze difficulty RUN")
    table = read_csv(difficulty_file)
    keep = (table.index < labels.numel()).nonzero().squeeze(1)
    keep = keep[table.index[keep].argsort()]
    candidates, d = table.index[keep], table.difficulty[keep]
    wrong = int((labels[candidates] != table.label[keep]).sum())
    if wrong:
        raise DifficultyError(f"difficulty file {difficulty_file}: {wrong} labels differ from this training set; "
                              "it was computed on other data")
    return ranked_subset(spec, dataset, candidates, -d if kind == "easiest" else d)  # easiest = largest d first
