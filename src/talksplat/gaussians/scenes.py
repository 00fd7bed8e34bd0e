"""Synthetic Gaussian scenes for tests, benchmarks and the smoke-test render."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# Mean opacity-aware extent per unit of the median world sigma, for the size/opacity spread below.
RADIUS_CALIBRATION = 3.9


@dataclass
class Scene:
    """Gaussians plus a camera, in the argument order of ``rasterize``."""

    means: Tensor      # [N, 3]
    quats: Tensor      # [N, 4]
    scales: Tensor     # [N, 3]
    opacities: Tensor  # [N]
    colors: Tensor     # [N, C]
    viewmat: Tensor    # [4, 4]
    K: Tensor          # [3, 3]
    width: int
    height: int

    def gaussians(self) -> list[Tensor]:
        return [self.means, self.quats, self.scales, self.opacities, self.colors]

    def camera(self) -> tuple[Tensor, Tensor, int, int]:
        return self.viewmat, self.K, self.width, self.height

    def to(self, dtype: torch.dtype) -> Scene:
        cast = [t.to(dtype) for t in (*self.gaussians(), self.viewmat, self.K)]
        return Scene(*cast, self.width, self.height)


def random_scene(
    n: int,
    width: int,
    height: int,
    *,
    channels: int = 3,
    mean_radius_px: float = 12.0,
    depth: float = 3.0,
    opacity_range: tuple[float, float] = (0.1, 0.95),
    seed: int = 0,
) -> Scene:
    """N random anisotropic Gaussians filling the view of a camera at the origin looking down +z.

    Sizes are drawn log-uniformly so that the screen radius (3 sigma) averages about
    ``mean_radius_px`` pixels; depths spread +-20% around ``depth``.
    """
    gen = torch.Generator().manual_seed(seed)
    focal = 1.2 * max(width, height)
    z = depth * (0.8 + 0.4 * torch.rand(n, generator=gen))
    x = (torch.rand(n, generator=gen) - 0.5) * width / focal * z * 1.1
    y = (torch.rand(n, generator=gen) - 0.5) * height / focal * z * 1.1
    means = torch.stack([x, y, z], -1)
    # Calibrated so the mean of rasterize()'s reported radii (opacity-aware extents) ~ mean_radius_px.
    sigma_world = mean_radius_px / RADIUS_CALIBRATION * depth / focal
    log_spread = torch.empty(n, 3).uniform_(-0.8, 0.8, generator=gen)
    scales = sigma_world * torch.exp(log_spread)
    quats = torch.randn(n, 4, generator=gen)
    quats = quats / quats.norm(dim=-1, keepdim=True)
    lo, hi = opacity_range
    opacities = lo + (hi - lo) * torch.rand(n, generator=gen)
    colors = torch.rand(n, channels, generator=gen)
    K = torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])
    return Scene(means, quats, scales, opacities, colors, torch.eye(4), K, width, height)
