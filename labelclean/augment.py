"""Whole-batch augmentation on image tensors, on whatever device they live on.

Each training "view" is ``normalize(augment(images[idx]))``: one crop-and-flip for the
whole batch, no per-image Python loop, no host round trip. Small images (up to
:data:`SMALL_SIDE` px, CIFAR's recipe) get a random crop of the zero-padded image; photos get
random-resized crops, the recipe of DivideMix's WebVision code and of ImageNet training.
Self-supervised pretraining (``simclr.py``) adds SimCLR's colour distortion.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SMALL_SIDE = 64  # px: images up to this side are padded and cropped (the paper's CIFAR recipe), larger ones are photos
PHOTO_CROP_SCALE = (0.08, 1.0)  # share of the area a photo's random-resized crop keeps: torchvision's default,
#                                 which DivideMix's WebVision loader uses (RandomResizedCrop(299))
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the normalisation torchvision's ImageNet weights were trained with
IMAGENET_STD = (0.229, 0.224, 0.225)
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as PIL's convert("L")


def imagenet_stats(channels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std that ImageNet weights expect; for gray images the luma of ImageNet's
    (a gray network's stem sums the colour filters, :func:`labelclean.models.fit_stem`)."""
    if channels == 3:
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    luma = [sum(w * v for w, v in zip(GRAY_WEIGHTS, values)) for values in (IMAGENET_MEAN, IMAGENET_STD)]
    return [luma[0]], [luma[1]]


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
    """The training transform: a random crop (with padding for small images, resized for photos),
    optional horizontal flip, normalize."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, padding: int, flip: bool):
        self.mean, self.std, self.padding, self.flip = mean, std, padding, flip

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] > SMALL_SIDE:
            photos = random_resized_crop(images.float().div_(255), PHOTO_CROP_SCALE, self.flip)
            return (photos - self.mean) / self.std
        images = random_crop(images, self.padding)
        if self.flip:
            images = random_flip(images)
        return normalize(images, self.mean, self.std)

    def plain(self, images: torch.Tensor) -> torch.Tensor:
        """The evaluation transform: normalize only."""
        return normalize(images, self.mean, self.std)


# ---------------------------------------------------------------------------------------------
# Resized crops (photos, and SimCLR's views in pretraining) and the colour distortion of
# self-supervised pretraining, on float images in [0, 1].


def random_resized_crop(images: torch.Tensor, scale: tuple[float, float], flip: bool) -> torch.Tensor:
    """A random crop of each image covering a share in ``scale`` of its area, with aspect ratio in
    [3/4, 4/3], resized back to the full size (bilinear); mirrored left–right for a random half
    when ``flip``. One ``affine_grid`` + ``grid_sample`` for the whole batch.

    Parameters
    ----------
    images : float Tensor, (n, c, h, w)
    """
    n, device = images.shape[0], images.device
    area = torch.empty(n, device=device).uniform_(*scale)
    aspect = torch.empty(n, device=device).uniform_(math.log(3 / 4), math.log(4 / 3)).exp()
    width, height = (area * aspect).sqrt().clamp(max=1), (area / aspect).sqrt().clamp(max=1)
    mirror = torch.where(torch.rand(n, device=device) < 0.5, -1.0, 1.0) if flip else torch.ones(n, device=device)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 1, 1] = width * mirror, height  # output [-1, 1] → a window of the input
    theta[:, 0, 2] = (torch.rand(n, device=device) * 2 - 1) * (1 - width)  # window centre, inside the image
    theta[:, 1, 2] = (torch.rand(n, device=device) * 2 - 1) * (1 - height)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def gray(images: torch.Tensor) -> torch.Tensor:
    """(n, 3, h, w) → (n, 1, h, w) luma; a gray batch is returned as it is."""
    if images.shape[1] == 1:
        return images
    return torch.einsum("nchw,c->nhw", images, images.new_tensor(GRAY_WEIGHTS)).unsqueeze(1)


def uniform(n: int, spread: float, device: torch.device) -> torch.Tensor:
    """(n, 1, 1, 1) factors drawn from [1 − spread, 1 + spread]."""
    return 1 + (torch.rand(n, 1, 1, 1, device=device) * 2 - 1) * spread


def rotate_hue(images: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate each RGB image's hue by ``turns`` (n,) of a full turn: a rotation of the chroma plane
    (I, Q) of YIQ space, which keeps the luma Y."""
    to_yiq = images.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    cos, sin = torch.cos(2 * math.pi * turns), torch.sin(2 * math.pi * turns)
    rotation = torch.zeros(len(turns), 3, 3, device=images.device)
    rotation[:, 0, 0], rotation[:, 1, 1], rotation[:, 1, 2], rotation[:, 2, 1], rotation[:, 2, 2] = 1, cos, -sin, sin, cos
    matrix = torch.linalg.inv(to_yiq) @ rotation @ to_yiq  # (n, 3, 3)
    return torch.einsum("nij,njhw->nihw", matrix, images)


def colour_jitter(images: torch.Tensor, strength: float, hue: float, p: float) -> torch.Tensor:
    """SimCLR's colour distortion for a random share ``p`` of the batch: brightness, contrast and
    saturation scaled by factors in [1 − strength, 1 + strength], hue turned by up to ``hue``;
    each image's own factors, applied in this fixed order. Gray images get brightness and contrast."""
    n, device = images.shape[0], images.device
    x = images * uniform(n, strength, device)
    mean = gray(x).mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * uniform(n, strength, device) + mean
    if x.shape[1] == 3:
        luma = gray(x)
        x = rotate_hue((x - luma) * uniform(n, strength, device) + luma,
                       (torch.rand(n, device=device) * 2 - 1) * hue)
    chosen = torch.rand(n, 1, 1, 1, device=device) < p
    return torch.where(chosen, x.clamp(0, 1), images)


def random_gray(images: torch.Tensor, p: float) -> torch.Tensor:
    """Turn a random share ``p`` of a colour batch gray (kept as three equal channels)."""
    chosen = torch.rand(images.shape[0], 1, 1, 1, device=images.device) < p
    return torch.where(chosen, gray(images).expand_as(images), images)
