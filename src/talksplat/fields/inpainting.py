"""A lightweight U-Net that inpaints a hole in an image (SyncTalk++ OOD Audio Torso Restorer).

Trained per subject on its own frames: a frame (randomly rotated) loses its head region expanded by
a random margin, and the network restores it from the rest; at render the source frame's head
region expanded by a fixed margin is restored, so the gap between the rendered head and the source
torso is filled with plausible neck, torso and background instead of the source's own chin line.
Inputs are (H, W, 3) images and (H, W) masks (1 = hole), as the rest of talksplat uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

# Margins are given at 512^2 (the paper's size) and scale with the image.
REFERENCE_SIZE = 512


@dataclass
class RestorerConfig:
    channels: int = 16           # first level's width; doubled per level
    levels: int = 3
    train_margin_px: tuple[int, int] = (10, 30)   # random expansion of the head mask (px at 512^2)
    render_margin_px: int = 15                    # fixed expansion at render (px at 512^2)
    max_rotation_deg: float = 10.0                # random rotation of training frames


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.1, True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.1, True))


class InpaintingUNet(nn.Module):
    """(H, W, 3) image with a hole, (H, W) hole mask -> (H, W, 3) image, hole filled, rest kept."""

    def __init__(self, cfg: RestorerConfig) -> None:
        super().__init__()
        widths = [cfg.channels * 2 ** i for i in range(cfg.levels)]
        self.down = nn.ModuleList([_block(4 if i == 0 else widths[i - 1], w) for i, w in enumerate(widths)])
        self.up = nn.ModuleList([_block(widths[i] + widths[i - 1], widths[i - 1]) for i in range(len(widths) - 1, 0, -1)])
        self.out = nn.Conv2d(widths[0], 3, 1)

    @property
    def multiple(self) -> int:
        return 2 ** (len(self.down) - 1)

    def forward(self, image: Tensor, hole: Tensor) -> Tensor:
        h, w = hole.shape
        x = torch.cat([image * (1 - hole[..., None]), hole[..., None]], -1).permute(2, 0, 1)[None]
        pad_h, pad_w = (-h) % self.multiple, (-w) % self.multiple
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.avg_pool2d(x, 2))
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            x = block(torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="nearest"), skip], 1))
        filled = torch.sigmoid(self.out(x))[0, :, :h, :w].permute(1, 2, 0)
        return torch.where(hole[..., None] > 0.5, filled, image)


def margin_pixels(margin_at_512: float, size: int) -> int:
    """A margin given at 512^2 at image size ``size`` (at least 1 px)."""
    return max(1, round(margin_at_512 * size / REFERENCE_SIZE))


def dilate(mask: Tensor, pixels: int) -> Tensor:
    """(H, W) {0, 1} mask grown by ``pixels`` (square structuring element)."""
    if pixels <= 0:
        return mask
    grown = F.max_pool2d(mask[None, None].float(), 2 * pixels + 1, stride=1, padding=pixels)
    return grown[0, 0]


def rotate(image: Tensor, degrees: float) -> Tensor:
    """(H, W, C) rotated about its centre (bilinear; borders repeated)."""
    a = math.radians(degrees)
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]], dtype=image.dtype)
    x = image.permute(2, 0, 1)[None]
    grid = F.affine_grid(theta[None], list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)[0].permute(1, 2, 0)


def training_example(image: Tensor, head: Tensor, cfg: RestorerConfig, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """(rotated image, hole) for one training step: the frame and its head mask rotated by the same
    random angle, the mask expanded by a random margin (both drawn from ``rng``)."""
    angle = float(rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg))
    low, high = cfg.train_margin_px
    margin = margin_pixels(float(rng.uniform(low, high)), image.shape[0])
    stacked = rotate(torch.cat([image, head[..., None].float()], -1), angle)
    rotated, rotated_head = stacked[..., :3], (stacked[..., 3] > 0.5).float()
    return rotated, dilate(rotated_head, margin)
