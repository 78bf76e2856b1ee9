"""Sample weights that apply to some loss terms only (GAIR-TRADES weights just the KL term)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["TermWeights"]


@dataclass(frozen=True)
class TermWeights:
    """Per-sample weights [B] for the loss terms named in ``terms`` (None: every term).

    Return one from ``advcore_sample_weights`` instead of a bare tensor to weight only some
    terms; the others are reduced as if this plugin returned nothing.
    """

    values: torch.Tensor
    """Non-negative weights [B]."""
    terms: tuple[str, ...] | None = None
    """Names of the loss terms they apply to (None: every term)."""

    def __post_init__(self) -> None:
        if self.terms is not None:
            object.__setattr__(self, "terms", tuple(self.terms))
