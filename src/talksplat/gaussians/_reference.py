"""Pure-PyTorch reference rasterizer: simple, readable, differentiable by autograd, any float dtype.

It implements exactly the conventions of the C++ kernel (see ``csrc/rasterize.cpp``) and exists so
tests can check the fast kernel against it. It is 30-100x slower and memory hungry; use it for small
scenes, float64 gradient checks, and as executable documentation of the maths.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

TILE_SIZE = 16
ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99
T_MIN = 1e-4
EXTENT_MARGIN = 0.01
FOV_CLAMP = 0.3


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """quats[N,4] (wxyz, any norm) -> rotation matrices [N,3,3]."""
    w, x, y, z = (quats / quats.norm(dim=-1, keepdim=True)).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(-1, 3, 3)


def power_limit(opacities: Tensor) -> Tensor:
    """2 * the largest Mahalanobis power at which alpha can still reach 1/255 (0 if never)."""
    limit = 2.0 * torch.log(opacities.detach() / ALPHA_MIN) + EXTENT_MARGIN
    return torch.where(opacities.detach() >= ALPHA_MIN, limit, torch.zeros_like(limit))


def _pixel_span(center: Tensor, extent: Tensor) -> tuple[Tensor, Tensor]:
    return torch.ceil(center - extent - 0.5), torch.floor(center + extent - 0.5)


def project_reference(means, quats, scales, opacities, viewmat, K, width, height, near, far, eps2d):
    """Same contract as ``_cpu.project``: means2d[N,2], conics[N,3], depths[N], ext[N,2], radii[N,2]."""
    R_view, t_view = viewmat[:3, :3], viewmat[:3, 3]
    p = means @ R_view.T + t_view
    x, y, z = p.unbind(-1)
    in_depth = (z > near) & (z < far)
    z_safe = torch.where(in_depth, z, torch.ones_like(z))  # keeps culled Gaussians' gradients finite

    M = quat_to_rotmat(quats) * scales[:, None, :]
    cov_cam = R_view @ (M @ M.transpose(1, 2)) @ R_view.T

    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    u = (x / z_safe).clamp(-(cx / fx + FOV_CLAMP * tan_fovx), (width - cx) / fx + FOV_CLAMP * tan_fovx)
    v = (y / z_safe).clamp(-(cy / fy + FOV_CLAMP * tan_fovy), (height - cy) / fy + FOV_CLAMP * tan_fovy)
    zero = torch.zeros_like(z)
    J = torch.stack([fx / z_safe, zero, -fx * u / z_safe, zero, fy / z_safe, -fy * v / z_safe], -1)
    J = J.reshape(-1, 2, 3)
    cov2d = J @ cov_cam @ J.transpose(1, 2)
    a = cov2d[:, 0, 0] + eps2d
    b = cov2d[:, 0, 1]
    c = cov2d[:, 1, 1] + eps2d
    det = a * c - b * b
    conics = torch.stack([c / det, -b / det, a / det], -1)
    means2d = torch.stack([fx * x / z_safe + cx, fy * y / z_safe + cy], -1)

    limit = power_limit(opacities)
    ext = torch.stack([torch.sqrt(limit * a.detach()), torch.sqrt(limit * c.detach())], -1)
    lo, hi = _pixel_span(means2d.detach(), ext)
    on_screen = (hi[:, 0] >= 0) & (lo[:, 0] <= width - 1) & (hi[:, 1] >= 0) & (lo[:, 1] <= height - 1)
    visible = in_depth & (limit > 0) & on_screen
    ext = torch.where(visible[:, None], ext, torch.zeros_like(ext))
    means2d = torch.where(visible[:, None], means2d, torch.zeros_like(means2d))
    conics = torch.where(visible[:, None], conics, torch.zeros_like(conics))
    radii = torch.ceil(ext).to(torch.int32)
    return means2d, conics, z, ext, radii


def _composite(alpha_raw: Tensor, sigma: Tensor, features: Tensor) -> tuple[Tensor, Tensor]:
    """Front-to-back compositing of Gaussians (columns, in depth order) over pixels (rows)."""
    alpha = alpha_raw.clamp(max=ALPHA_MAX)
    valid = (sigma >= 0) & (alpha >= ALPHA_MIN)
    alpha = torch.where(valid, alpha, torch.zeros_like(alpha))
    # A pixel stops before the Gaussian that would take its transmittance to T_MIN or below.
    T_after = torch.cumprod(1 - alpha, dim=1)
    used = valid & (T_after.detach() > T_MIN)
    alpha = torch.where(used, alpha, torch.zeros_like(alpha))
    T_after = torch.cumprod(1 - alpha, dim=1)
    T_before = torch.cat([torch.ones_like(T_after[:, :1]), T_after[:, :-1]], dim=1)
    acc = (alpha * T_before) @ features
    T_final = T_after[:, -1] if T_after.shape[1] else torch.ones(T_after.shape[0], dtype=T_after.dtype)
    return acc, T_final


def rasterize_features_reference(means2d, conics, opacities, features, ext, depths, width, height):
    """Same contract as ``_cpu.rasterize_features``: acc[H,W,C] and T_final[H,W].

    Processes 16x16 pixel tiles; each tile evaluates every Gaussian whose extent box overlaps it, in
    front-to-back depth order, densely.
    """
    visible = ext[:, 0] > 0
    order = torch.argsort(depths.detach(), stable=True)
    order = order[visible[order]]
    lo, hi = _pixel_span(means2d.detach()[order], ext[order])
    channels = features.shape[1]
    # Tiles are assembled with torch.cat (not written in place) so autograd's backward stays cheap.
    rows = []
    for y0 in range(0, height, TILE_SIZE):
        row = []
        for x0 in range(0, width, TILE_SIZE):
            x1, y1 = min(x0 + TILE_SIZE, width), min(y0 + TILE_SIZE, height)
            hits = (hi[:, 0] >= x0) & (lo[:, 0] <= x1 - 1) & (hi[:, 1] >= y0) & (lo[:, 1] <= y1 - 1)
            ids = order[hits]
            py, px = torch.meshgrid(torch.arange(y0, y1, dtype=features.dtype) + 0.5,
                                    torch.arange(x0, x1, dtype=features.dtype) + 0.5, indexing="ij")
            dx = means2d[ids, 0][None, :] - px.reshape(-1, 1)
            dy = means2d[ids, 1][None, :] - py.reshape(-1, 1)
            a, b, c = conics[ids].unbind(-1)
            sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
            tile_acc, tile_T = _composite(opacities[ids] * torch.exp(-sigma), sigma, features[ids])
            row.append(torch.cat([tile_acc, tile_T[:, None]], -1).reshape(y1 - y0, x1 - x0, channels + 1))
        rows.append(torch.cat(row, dim=1))
    image = torch.cat(rows, dim=0)
    acc, T_final = image[..., :channels], image[..., channels]
    return acc, T_final


def count_tiles(means2d: Tensor, ext: Tensor, width: int, height: int) -> Tensor:
    """Tiles touched by each Gaussian's extent box (for meta and densification statistics)."""
    lo, hi = _pixel_span(means2d.detach(), ext)
    lo = torch.maximum(lo, torch.zeros_like(lo))
    hi = torch.minimum(hi, torch.tensor([width - 1, height - 1], dtype=hi.dtype))
    tiles = (torch.div(hi, TILE_SIZE, rounding_mode="floor") - torch.div(lo, TILE_SIZE, rounding_mode="floor") + 1)
    counts = (tiles[:, 0] * tiles[:, 1]).to(torch.int32)
    return torch.where(ext[:, 0] > 0, counts, torch.zeros_like(counts))


def gaussian_extent_sigmas(opacity: float) -> float:
    """How many standard deviations a Gaussian of this opacity reaches (for docs and tests)."""
    return math.sqrt(max(2.0 * math.log(opacity / ALPHA_MIN) + EXTENT_MARGIN, 0.0))
