"""Optional CUDA backend: gsplat's kernels behind talksplat's ``rasterize`` contract.

Used by ``rasterize(backend="auto")`` for CUDA tensors when gsplat imports (``talksplat[cuda]``).
gsplat bounds splats by 3 sigma where talksplat's CPU kernel uses an opacity-aware extent, so the
two differ slightly at splat edges (contributions below alpha 1/255 * ~2).
"""

from __future__ import annotations

import torch

from talksplat._native import NativeStatus


def status() -> NativeStatus:
    if not torch.cuda.is_available():
        return NativeStatus("rasterizer (gsplat cuda)", False, "no CUDA device (torch.cuda.is_available() is False)")
    try:
        import gsplat
    except ImportError:
        return NativeStatus("rasterizer (gsplat cuda)", False, "gsplat not installed: pip install talksplat[cuda]")
    return NativeStatus("rasterizer (gsplat cuda)", True, f"gsplat {gsplat.__version__}")


def rasterize_gsplat(means, quats, scales, opacities, colors, viewmat, K, width, height, background, *,
                     near_plane, far_plane, eps2d, with_depth: bool = True) -> tuple:
    """gsplat's rasterization as (image, alpha, depth, meta); ``rasterize`` wraps it in its
    ``RenderResult`` (a plain tuple here keeps this backend below ``rasterize``: no import cycle)."""
    import gsplat

    renders, alphas, info = gsplat.rasterization(
        means, quats, scales, opacities, colors, viewmat[None], K[None], width, height,
        near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, render_mode="RGB+D" if with_depth else "RGB",
        packed=False)
    channels = colors.shape[1]
    alpha = alphas[0]
    image = renders[0, ..., :channels]
    if background is not None:
        image = image + (1.0 - alpha) * background
    radii = info["radii"][0]
    radii = radii if radii.ndim == 2 else radii[:, None].expand(-1, 2)
    meta = {"means2d": info["means2d"], "radii": radii.to(torch.int32), "visible": (radii > 0).any(-1),
            "depths": info["depths"][0], "conics": info["conics"][0],
            "tiles_per_gaussian": info["tiles_per_gauss"][0], "n_isects": int(info["isect_ids"].numel()),
            "backend": "gsplat"}
    return image, alpha, renders[0, ..., channels:] if with_depth else None, meta
