"""The persistent Gaussian field: raw parameters, their activations, and per-parameter optimizers.

Parameters live in an ``nn.ParameterDict`` with one Adam optimizer per entry (as in gsplat's
examples), so densification can grow and shrink each tensor together with its optimizer state.

Raw parameters and activations:
    means          [N, 3]  world positions (identity)
    log_scales     [N, 3]  -> scales = exp(log_scales)
    quats          [N, 4]  -> normalised inside the rasterizer (wxyz)
    opacity_logits [N]     -> opacities = sigmoid(opacity_logits)
    colors         [N, C]  RGB in [0, 1] (C=3) or neural features (any C)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

PARAM_NAMES = ("means", "log_scales", "quats", "opacity_logits", "colors")


@dataclass
class GaussianLearningRates:
    """Adam learning rates per parameter. ``means`` is in world units per step: recipes set it from
    the pixel size at the subject's depth, because 3DGS's 'lr x scene extent' rule breaks when the
    camera barely moves (facts.md)."""

    means: float = 1.6e-4
    log_scales: float = 5e-3
    quats: float = 1e-3
    opacity_logits: float = 5e-2
    colors: float = 2.5e-3

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in PARAM_NAMES}


@dataclass
class GaussianInitConfig:
    initial_opacity: float = 0.1
    # Initial scale = this x the mean distance to the nearest neighbours.
    scale_from_neighbours: float = 1.0
    neighbours: int = 3
    learning_rates: GaussianLearningRates = field(default_factory=GaussianLearningRates)


def nearest_neighbour_distance(points: Tensor, k: int = 3, chunk: int = 4096) -> Tensor:
    """points[N, 3] -> mean distance to the k nearest other points, [N] (chunked brute force)."""
    n = points.shape[0]
    if n <= 1:
        return torch.ones(n)
    k = min(k, n - 1)
    out = torch.empty(n)
    for start in range(0, n, chunk):
        d = torch.cdist(points[start:start + chunk], points)
        d[torch.arange(d.shape[0]), torch.arange(start, start + d.shape[0])] = math.inf
        out[start:start + chunk] = d.topk(k, largest=False).values.mean(-1)
    return out


def init_params(points: Tensor, colors: Tensor, cfg: GaussianInitConfig) -> nn.ParameterDict:
    """Isotropic Gaussians at ``points`` [N, 3] with ``colors`` [N, C]."""
    n = points.shape[0]
    dist = nearest_neighbour_distance(points, cfg.neighbours).clamp_min(1e-7)
    log_scales = torch.log(dist * cfg.scale_from_neighbours)[:, None].repeat(1, 3)
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1.0
    opacity = torch.full((n,), cfg.initial_opacity)
    params = {
        "means": points.float().clone(),
        "log_scales": log_scales,
        "quats": quats,
        "opacity_logits": torch.logit(opacity),
        "colors": colors.float().clone(),
    }
    return nn.ParameterDict({k: nn.Parameter(v) for k, v in params.items()})


def make_optimizers(params: nn.ParameterDict, lrs: GaussianLearningRates) -> dict[str, torch.optim.Adam]:
    rates = lrs.as_dict()
    # eps 1e-15 as in 3DGS: Gaussians with tiny gradients should still move.
    return {name: torch.optim.Adam([params[name]], lr=rates[name], eps=1e-15) for name in params}


def activated(params: nn.ParameterDict) -> dict[str, Tensor]:
    """The rasterizer's inputs from the raw parameters."""
    return {
        "means": params["means"],
        "quats": params["quats"],
        "scales": torch.exp(params["log_scales"]),
        "opacities": torch.sigmoid(params["opacity_logits"]),
        "colors": params["colors"],
    }
