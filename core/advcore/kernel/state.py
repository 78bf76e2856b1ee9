"""Per-sample state keyed by dataset index (IAAT radii, ATTA caches, moving targets).

One store per run owns every per-sample tensor: plugins create them on first use, read and
write rows by ``step.index``, and the store saves them into checkpoints.
Any dtype works and is checkpointed as that dtype (safetensors keeps bool, int8..int64, uint8,
float16/bfloat16/32/64): int8 flags or int32 step counts cost 1 or 4 bytes a sample and no cast.
"""

from __future__ import annotations

from typing import Iterator

import torch

__all__ = ["SampleState"]


class SampleState:
    """Named tensors shaped [N, ...] where N is the training set size."""

    def __init__(self, num_samples: int, device: torch.device | str = "cpu"):
        self.num_samples = num_samples
        self.device = torch.device(device)
        self._tensors: dict[str, torch.Tensor] = {}

    def tensor(self, name: str, shape: tuple[int, ...] = (), dtype: torch.dtype = torch.float32,
               fill: float | int | bool = 0) -> torch.Tensor:
        """The tensor ``name``, created filled with ``fill`` the first time it is asked for."""
        existing = self._tensors.get(name)
        if existing is None:
            existing = torch.full((self.num_samples, *shape), fill, dtype=dtype, device=self.device)
            self._tensors[name] = existing
        elif existing.shape[1:] != tuple(shape) or existing.dtype != dtype:
            raise ValueError(
                f"per-sample state '{name}' exists as {tuple(existing.shape[1:])}/{existing.dtype}, "
                f"asked for {tuple(shape)}/{dtype}"
            )
        return existing

    def __contains__(self, name: str) -> bool:
        return name in self._tensors

    def __len__(self) -> int:
        return len(self._tensors)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._tensors[name]

    def __setitem__(self, name: str, value: torch.Tensor) -> None:
        if value.shape[0] != self.num_samples:
            raise ValueError(f"per-sample state '{name}' needs {self.num_samples} rows, got {value.shape[0]}")
        self._tensors[name] = value.to(self.device)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: t.detach().cpu().contiguous() for name, t in self._tensors.items()}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, value in tensors.items():
            self[name] = value.clone()
