"""Mapping between a batch's augmented images and per-sample caches in the padded frame.

The loader draws a crop offset and a flip per row (``step.crop``, ``step.flip``); the
core's ``Augment`` cuts that window out of a padded frame and puts a patch back. Rows
that were not augmented (``crop`` None, e.g. ``advcore.testing.tiny_batch``) sit at the
centre of the frame; without augmentation the frame is the image itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FrameWindow:
    augment: object | None
    crop: torch.Tensor | None
    flip: torch.Tensor | None

    @classmethod
    def of(cls, augment, step) -> "FrameWindow":
        if augment is None or (augment.padding == 0 and step.flip is None):
            return cls(None, None, None)
        crop = step.crop
        if crop is None and augment.padding:
            crop = torch.full((step.size, 2), augment.padding, dtype=torch.long, device=step.x.device)
        return cls(augment, crop, step.flip)

    def crop_of(self, frames: torch.Tensor) -> torch.Tensor:
        """The rows' windows of ``frames`` [B, C, Hp, Wp], flipped like the images: [B, C, H, W]."""
        if self.augment is None:
            return frames
        return self.augment.from_frame(frames, self.crop, self.flip)

    def paste(self, patch: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """``frames`` with each row's window replaced by ``patch`` (un-flipped); pixels outside are kept."""
        if self.augment is None:  # the frame is the image: the patch is the new frame
            return patch.detach()
        return self.augment.to_frame(patch.detach(), frames, self.crop, self.flip)
