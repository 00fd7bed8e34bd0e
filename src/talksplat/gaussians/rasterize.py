"""``rasterize``: talksplat's one functional entry point for rendering 3D Gaussians.

In the spirit of ``gsplat.rasterization``: plain tensors in, an image, alpha, depth and metadata out,
differentiable with respect to every Gaussian input. Three backends share one contract:

- ``"cpu"``: the tile-based C++ kernel (OpenMP), built on first use; the default on CPU.
- ``"reference"``: pure PyTorch, slow, any float dtype (float64 for gradient checks).
- ``"gsplat"``: gsplat's CUDA kernels, used by ``"auto"`` for CUDA tensors (``pip install talksplat[cuda]``).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

from talksplat.gaussians import _cpu, _reference

Backend = Literal["auto", "cpu", "reference", "gsplat"]

DEFAULT_NEAR_PLANE = 0.01
DEFAULT_FAR_PLANE = 1e10
DEFAULT_EPS2D = 0.3  # gsplat's 2D low-pass: keeps every splat at least ~half a pixel wide


class RenderResult(NamedTuple):
    image: Tensor  # [H, W, C]
    alpha: Tensor  # [H, W, 1]
    depth: Tensor  # [H, W, 1] accumulated depth sum_i w_i z_i (divide by alpha for expected depth)
    meta: dict


def project_points(points: Tensor, w2c: Tensor, K: Tensor) -> tuple[Tensor, Tensor]:
    """[N, 3] world points -> ([N, 2] pixels, [N] depths) of the camera ``w2c`` (4x4) with intrinsics
    ``K`` (3x3), as :func:`rasterize` places them (pixel centres at +0.5)."""
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    return cam[:, :2] / cam[:, 2:3] * torch.stack([K[0, 0], K[1, 1]]) + K[:2, 2], cam[:, 2]


def _gsplat_usable(means: Tensor) -> bool:
    if not (means.is_cuda and torch.cuda.is_available()):
        return False
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: Backend, means: Tensor) -> str:
    """Picks the backend ``rasterize`` will use for these inputs."""
    if backend != "auto":
        return backend
    if means.is_cuda:
        if _gsplat_usable(means):
            return "gsplat"
        raise RuntimeError("CUDA tensors need gsplat: `pip install talksplat[cuda]`, or move inputs to the CPU")
    if means.dtype == torch.float32 and _cpu.status().available:
        return "cpu"
    return "reference"


def _check_inputs(means, quats, scales, opacities, colors, viewmat, K, background) -> None:
    n = means.shape[0]
    expected = {"means": (means, (n, 3)), "quats": (quats, (n, 4)), "scales": (scales, (n, 3)),
                "opacities": (opacities, (n,)), "viewmat": (viewmat, (4, 4)), "K": (K, (3, 3))}
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"rasterize: {name} must have shape {list(shape)}, got {list(tensor.shape)}")
    if colors.ndim != 2 or colors.shape[0] != n:
        raise ValueError(f"rasterize: colors must have shape [N={n}, C], got {list(colors.shape)}")
    if background is not None and background.shape != (colors.shape[1],):
        raise ValueError(f"rasterize: background must have shape [C={colors.shape[1]}], got {list(background.shape)}")


def rasterize(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmat: Tensor,
    K: Tensor,
    width: int,
    height: int,
    background: Tensor | None = None,
    *,
    near_plane: float = DEFAULT_NEAR_PLANE,
    far_plane: float = DEFAULT_FAR_PLANE,
    eps2d: float = DEFAULT_EPS2D,
    backend: Backend = "auto",
    with_depth: bool = True,
) -> RenderResult:
    """Renders N 3D Gaussians seen by a pinhole camera.

    Args:
        means: [N, 3] centres in world space.
        quats: [N, 4] rotations as quaternions (w, x, y, z); normalised internally.
        scales: [N, 3] standard deviations along the Gaussian's axes (linear, not log).
        opacities: [N] opacities in [0, 1] (already activated).
        colors: [N, C] any per-Gaussian features: RGB (C=3) or neural features (e.g. C=32).
        viewmat: [4, 4] world-to-camera transform; the camera looks down +z, x right, y down.
        K: [3, 3] intrinsics (fx, fy, cx, cy); pixel (i, j) has its centre at (i + 0.5, j + 0.5).
        width, height: image size in pixels (any size; need not be a multiple of the 16-px tile).
        background: [C] value composited behind the Gaussians (default zeros).
        near_plane, far_plane: Gaussians whose centre depth is outside (near, far) are culled.
        eps2d: added to the diagonal of each projected 2D covariance (anti-aliasing low-pass).
        backend: "auto", "cpu", "reference" or "gsplat" (see module docstring).
        with_depth: False skips the accumulated depth (``depth`` is None): one feature channel less
            to composite and back-propagate, e.g. ~25% of the pixel work for RGB.

    Returns:
        RenderResult(image [H, W, C], alpha [H, W, 1], depth [H, W, 1] or None, meta) where meta holds:
        ``means2d`` [N, 2] projected centres (call ``.retain_grad()`` before backward to read the
        screen-space gradient used by densification), ``radii`` [N, 2] int32 pixel half-extents
        (0 = culled), ``visible`` [N] bool, ``depths`` [N] camera-space z, ``conics`` [N, 3],
        ``tiles_per_gaussian`` [N] int32, ``n_isects`` and ``backend``.

    Conventions (as gsplat): alpha = min(0.99, opacity * exp(-sigma)); contributions with
    alpha < 1/255 are skipped; a pixel stops once its transmittance would reach 1e-4. A Gaussian's
    screen extent is the ellipse where it can reach alpha >= 1/255 (opacity-aware, ~3.3 sigma at
    opacity 1) rather than a fixed 3 sigma.
    """
    _check_inputs(means, quats, scales, opacities, colors, viewmat, K, background)
    chosen = resolve_backend(backend, means)
    if chosen == "gsplat":
        from talksplat.gaussians._gsplat import rasterize_gsplat

        image, alpha, depth, meta = rasterize_gsplat(
            means, quats, scales, opacities, colors, viewmat, K, width, height, background,
            near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, with_depth=with_depth)
        return RenderResult(image, alpha, depth, meta)
    if chosen == "cpu":
        means2d, conics, depths, ext, radii = _cpu.project(
            means, quats, scales, opacities, viewmat, K, width, height, near_plane, far_plane, eps2d)
        bins = _cpu.bin_tiles(means2d, ext, depths, width, height)
        features = torch.cat([colors.float(), depths[:, None]], dim=-1) if with_depth else colors.float()
        acc, T_final = _cpu.rasterize_features(means2d, conics, opacities, features, ext, bins, width, height)
        tiles_per_gaussian, n_isects = bins.counts, bins.n_isects
    elif chosen == "reference":
        means2d, conics, depths, ext, radii = _reference.project_reference(
            means, quats, scales, opacities, viewmat, K, width, height, near_plane, far_plane, eps2d)
        features = torch.cat([colors, depths[:, None]], dim=-1) if with_depth else colors
        acc, T_final = _reference.rasterize_features_reference(
            means2d, conics, opacities, features, ext, depths, width, height)
        tiles_per_gaussian = _reference.count_tiles(means2d, ext, width, height)
        n_isects = int(tiles_per_gaussian.sum())
    else:
        raise ValueError(f"rasterize: unknown backend {backend!r}; use auto, cpu, reference or gsplat")

    channels = colors.shape[1]
    T_final = T_final[..., None]
    image = acc[..., :channels]
    if background is not None:     # zeros add nothing: skip a pass over the image
        image = image + T_final * background.to(acc.dtype)
    meta = {
        "means2d": means2d, "radii": radii, "visible": radii[:, 0] > 0, "depths": depths,
        "conics": conics, "tiles_per_gaussian": tiles_per_gaussian, "n_isects": n_isects,
        "backend": chosen,
    }
    return RenderResult(image, 1.0 - T_final, acc[..., channels:] if with_depth else None, meta)
