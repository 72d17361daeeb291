"""Whole-batch augmentation on uint8 image tensors, on whatever device they live on.

Each training "view" is ``normalize(augment(images[idx]))``: one crop-and-flip for the
whole batch, no per-image Python loop, no host round trip.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_padding(size: int) -> int:
    """Padding for random crops: 4 px at 32 px as in the paper, scaled with the image size."""
    return max(1, round(size / 8))


def random_crop(images: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-pad by ``padding`` and crop back to the original size at a random offset per image.

    Parameters
    ----------
    images : Tensor, (n, c, h, w)
    """
    if padding == 0:
        return images
    n, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, n, 1, 1, 1), device=images.device)
    rows = offsets[0] + torch.arange(h, device=images.device).view(1, 1, h, 1)
    cols = offsets[1] + torch.arange(w, device=images.device).view(1, 1, 1, w)
    cropped_rows = padded.gather(2, rows.expand(n, c, h, w + 2 * padding))
    return cropped_rows.gather(3, cols.expand(n, c, h, w))


def random_flip(images: torch.Tensor) -> torch.Tensor:
    """Mirror a random half of the batch left–right."""
    flip = torch.rand(images.shape[0], 1, 1, 1, device=images.device) < 0.5
    return torch.where(flip, images.flip(3), images)


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (n, c, h, w) → float, standardized per channel with the data's own statistics."""
    return (images.float().div_(255) - mean) / std


class Augment:
    """The training transform: random crop with padding, optional horizontal flip, normalize."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, padding: int, flip: bool):
        self.mean, self.std, self.padding, self.flip = mean, std, padding, flip

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = random_crop(images, self.padding)
        if self.flip:
            images = random_flip(images)
        return normalize(images, self.mean, self.std)

    def plain(self, images: torch.Tensor) -> torch.Tensor:
        """The evaluation transform: normalize only."""
        return normalize(images, self.mean, self.std)
