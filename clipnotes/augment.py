"""Random resized crops as batched affine maps: TPT's views (chapter 12) and the crop-pretrained
tiny CLIP's training images (chapter 1's ``pretrain-mini --crops``) are drawn by the same code."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .utils import ClipnotesError

#: torchvision's RandomResizedCrop defaults, TPT's augmentation for ImageNet and its shifts.
CROP_SCALE, CROP_RATIO = (0.08, 1.0), (3 / 4, 4 / 3)


def crop_boxes(n: int, scale: tuple[float, float] = CROP_SCALE, ratio: tuple[float, float] = CROP_RATIO,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` random crops (with a random horizontal flip) as affine maps, (n, 2, 3) for ``affine_grid``.

    A crop covers a share of the image's area drawn from ``scale`` with an aspect ratio drawn
    log-uniformly from ``ratio``, as torchvision's RandomResizedCrop; with ``scale`` up to 1 a
    side longer than the image is clipped to it (torchvision instead redraws, then falls back
    to a centre crop). A share above 1 zooms *out*: the image, smaller, somewhere inside the
    view, its edge pixels extended around it (whole when the aspect ratio leaves both sides at
    least the image's; a long side can still cut a little).
    """
    lo, hi = scale
    if not 0 < lo <= hi <= 4:
        raise ClipnotesError(f"crop scale {scale} must satisfy 0 < low <= high <= 4")
    area = torch.empty(n).uniform_(lo, hi, generator=generator)
    log_r = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    side = 1.0 if hi <= 1 else float("inf")
    w = (area * log_r.exp()).sqrt().clamp(max=side)             # width and height as shares of the side
    h = (area / log_r.exp()).sqrt().clamp(max=side)
    cx = (torch.rand(n, generator=generator) * 2 - 1) * (1 - w)  # a crop stays inside the image; a zoom-out keeps it all
    cy = (torch.rand(n, generator=generator) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w * flip, cx, h, cy
    return theta


def apply_crops(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample images ``x`` (N, 3, H, W, floats in [0, 1]) through crop maps ``theta`` (N, 2, 3),
    bilinear, back to H×W; edge pixels extend past the border."""
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False).clamp(0, 1)
