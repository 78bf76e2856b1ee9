"""The hypersphere classifier head of HE (Pang et al. 2020, Eq. 4-5) and its m-HE form (Sec. 3.5).

logits = s * cos(theta) with cos(theta) = W_hat z_hat: features normalised in the graph (FN),
class weights projected onto the unit sphere in place before a forward (WN, as the authors'
code does: no gradient through the normalisation), no bias. m-HE returns -s * theta instead.
The margin is not here: it belongs to the training loss only (``advcore_adjust_logits``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["HypersphereHead"]

_ACOS_CLAMP = 1e-6
"""arccos has an infinite slope at +-1; cosines are kept this far inside."""

_UNIT_TOLERANCE = 1e-6
"""Rows whose norm is this close to 1 count as projected (float32 rounding is about 6e-8)."""


class HypersphereHead(nn.Module):
    """Bias-free cosine classifier with scale ``s``; FN and WN can be switched off for ablations."""

    def __init__(self, weight: torch.Tensor, *, s: float, variant: Literal["he", "m-he"] = "he",
                 feature_norm: bool = True, weight_norm: bool = True):
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())
        self.out_features, self.in_features = weight.shape
        self.s = float(s)
        self.variant = variant
        self.feature_norm = feature_norm
        self.weight_norm = weight_norm
        self._projected: tuple[int, int] | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, **kwargs) -> "HypersphereHead":
        """Take over a linear head's weight (its bias is dropped: Eq. 5 has none)."""
        return cls(linear.weight, **kwargs)

    def project_weight(self) -> None:
        """WN: put every class row back on the unit sphere, in place and outside autograd.

        Only after the weight changed (optimizer step, checkpoint load), so several forwards
        of one step never modify a tensor an earlier forward saved for backward; F.normalize's
        w / max(||w||, 1e-12), written in place.
        """
        w = self.weight
        if self._projected == (w.data_ptr(), w._version):
            return
        with torch.no_grad():
            norms = w.norm(p=2, dim=1, keepdim=True)
            # Rows already on the sphere (a checkpoint of projected weights) are left bit for bit:
            # normalising a unit vector again moves it by rounding, which would change the weights.
            # Chosen per row on the device, so no host sync is added to the step.
            on_sphere = (norms - 1).abs() <= _UNIT_TOLERANCE
            w.copy_(torch.where(on_sphere, w, w / norms.clamp_min(1e-12)))
        self._projected = (w.data_ptr(), w._version)

    def cosine(self, z: torch.Tensor) -> torch.Tensor:
        """W_hat^T z_hat, i.e. cos(theta) when FN and WN are both on."""
        if self.weight_norm:
            self.project_weight()
        if self.feature_norm:
            z = F.normalize(z, p=2, dim=1)
        return F.linear(z, self.weight)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        cos = self.cosine(z)
        if self.variant == "m-he":
            theta = torch.acos(cos.clamp(-1 + _ACOS_CLAMP, 1 - _ACOS_CLAMP))
            return -self.s * theta
        return self.s * cos

    def describe(self) -> dict:
        """What ``model.advcore_head`` records (written into checkpoint manifests)."""
        return {"type": "hypersphere", "plugin": "he", "s": self.s, "variant": self.variant,
                "feature_norm": self.feature_norm, "weight_norm": self.weight_norm, "bias": False,
                "in_features": self.in_features, "out_features": self.out_features}

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, s={self.s}, "
                f"variant={self.variant}, feature_norm={self.feature_norm}, weight_norm={self.weight_norm}")
