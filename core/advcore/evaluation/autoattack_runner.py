"""AutoAttack (pyautoattack) that resumes after an interruption, batch by batch.

pyautoattack 0.2.0's own ``state_path`` cannot resume: it writes the attack set as a Python
string, so a restored state never matches the attacks it is compared with, and on restore
its ``y_adv`` is never created. So advcore runs the ensemble itself, one AutoAttack
component at a time over the still-robust samples in the same batches pyautoattack would
use (same seeds, so the same result), and after every batch writes a small JSON state:
robust flags, finished components, the samples still pending. The state file's name is a
digest of the model weights, the data and the settings, so a different evaluation never
picks up a stale state.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from ..progress import progress_bar

__all__ = ["autoattack_flags", "state_file"]


def _digest(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, settings: dict) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for t in [*model.state_dict().values(), x, y]:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def state_file(state_dir, model, x, y, settings: dict) -> Path | None:
    """Where the resumable state of this exact evaluation lives (None: keep no state)."""
    if state_dir is None:
        return None
    return Path(state_dir) / f"autoattack-{_digest(model, x, y, settings)}.json"


def _save(path: Path | None, state: dict) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, path)
    except OSError:  # a read-only checkpoint folder: evaluate anyway, just without resuming
        pass


def _load(path: Path | None) -> dict | None:
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class _OnceFilter(logging.Filter):
    """pyautoattack repeats its sanity warnings for every batch; show each one once."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


def autoattack_flags(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, clean: torch.Tensor, *, eps: float,
                     norm: str, version: str, attacks: list[str] | None, seed: int, batch_size: int,
                     square_queries: int | None = None, state_dir=None, progress: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
    """(robust flags [N], accuracy after each component); ``clean`` are the clean-correct flags."""
    from pyautoattack import AutoAttack

    aa = AutoAttack(model, attacks=attacks if version == "custom" else None, device=x.device, eps=eps, norm=norm,
                    seed=seed, version=version)
    with torch.no_grad():
        classes = model(x[:1]).shape[1]
    aa.apgd_targeted.n_target_classes = min(aa.apgd_targeted.n_target_classes, classes - 1)
    aa.fab.n_target_classes = min(aa.fab.n_target_classes, classes - 1)
    if square_queries:
        aa.square.n_queries = square_queries
    order = list(aa.attacks_to_run)
    settings = {"eps": eps, "norm": norm, "version": version, "attacks": order, "seed": seed, "batch": batch_size,
                "square_queries": aa.square.n_queries}
    path = state_file(state_dir, model, x, y, settings)
    state = _load(path) or {"robust": clean.cpu().tolist(), "done": [], "by_attack": {}, "current": None,
                            "pending": []}
    robust = torch.tensor(state["robust"], dtype=torch.bool, device=x.device)
    logger = logging.getLogger("auto-attack")
    once = _OnceFilter()
    logger.addFilter(once)
    try:
        for attack in order:
            if attack in state["done"]:
                continue
            if state["current"] != attack:
                state["current"], state["pending"] = attack, robust.nonzero().squeeze(1).tolist()
            pending = state["pending"]
            batches = (len(pending) + batch_size - 1) // batch_size
            for _ in progress_bar(range(batches), batches, f"autoattack {attack}", progress):
                idx = torch.tensor(pending[:batch_size], dtype=torch.long, device=x.device)
                aa.attacks_to_run = [attack]
                _, y_adv = aa.run_standard_evaluation(x[idx], y[idx], batch_size=len(idx))
                robust[idx] &= y_adv.to(x.device) == y[idx]
                pending = pending[batch_size:]
                state.update(robust=robust.cpu().tolist(), pending=pending)
                _save(path, state)
            state["by_attack"][attack] = robust.float().mean().item()
            state.update(done=state["done"] + [attack], current=None, pending=[])
            _save(path, state)
    finally:
        logger.removeFilter(once)
        aa.attacks_to_run = order
    return robust.cpu(), dict(state["by_attack"])
