"""What IAAT reports about its radii: an epoch histogram and a CSV of (index, label, radius).

The CSV is what the paper's interpretability figures are drawn from (images with the
smallest and largest radii); it is rewritten at every epoch end.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["radius_histogram", "write_radii_csv"]


def radius_histogram(radii: torch.Tensor, top: float, bins: int) -> dict:
    """Counts over ``bins`` equal bins on [0, top]; radii at or above ``top`` fall in the last bin."""
    edges = torch.linspace(0.0, top, bins + 1, dtype=torch.float64)
    r = radii.detach().double().cpu()
    which = torch.bucketize(r, edges[1:-1], right=True)
    counts = torch.bincount(which, minlength=bins)
    return {
        "radius_hist": [int(c) for c in counts],
        "radius_edges": [round(float(e), 6) for e in edges],
        "radius_mean": float(r.mean()) if r.numel() else 0.0,
        "radius_min": float(r.min()) if r.numel() else 0.0,
        "radius_max": float(r.max()) if r.numel() else 0.0,
    }


def write_radii_csv(path: Path, index: torch.Tensor, labels: torch.Tensor, radii: torch.Tensor) -> None:
    """Write ``index,label,radius`` rows sorted by index, atomically (a reader never sees half a file)."""
    order = torch.argsort(index.cpu())
    index, labels, radii = index.cpu()[order], labels.cpu()[order], radii.detach().cpu()[order]
    lines = ["index,label,radius"]
    lines += [f"{int(i)},{int(c)},{float(r):.8g}" for i, c, r in zip(index, labels, radii)]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
