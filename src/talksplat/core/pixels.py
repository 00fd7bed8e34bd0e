"""Pixel-coordinate conventions, defined once.

talksplat stores pixel coordinates (landmarks, intrinsics) in the OpenCV convention: the centre of
pixel (i, j) is at (i, j), so the image spans [-0.5, W - 0.5]. Resizing an image by ``s`` maps a
coordinate u to (u + 0.5) * s - 0.5 (edges stay on edges); a plain u * s would shift every point by
(s - 1) / 2 px (a quarter pixel at 512 -> 256). The rasterizer puts pixel centres at +0.5 instead.
"""

from __future__ import annotations

import numpy as np

RASTER_PIXEL_CENTRE = 0.5   # the rasterizer's pixel (i, j) has its centre at (i + 0.5, j + 0.5)


def rescale_pixels(uv, scale: float) -> np.ndarray:
    """(..., 2+) OpenCV pixel coordinates of an image -> those of the image resized by ``scale``
    (only the first two columns are coordinates; further ones, e.g. a depth, are left as they are)."""
    out = np.array(uv, dtype=np.float64, copy=True)
    out[..., :2] = (out[..., :2] + 0.5) * scale - 0.5
    return out


def rescale_intrinsics(K, scale: float) -> np.ndarray:
    """(3, 3) OpenCV intrinsics of an image -> those of the image resized by ``scale``:
    f' = f s and c' = (c + 0.5) s - 0.5, so a 3D point lands on the same place of the picture."""
    out = np.array(K, dtype=np.float64, copy=True)
    out[0, 0] *= scale
    out[1, 1] *= scale
    out[0, 1] *= scale
    out[:2, 2] = (out[:2, 2] + 0.5) * scale - 0.5
    return out


def raster_intrinsics(K, scale: float = 1.0) -> np.ndarray:
    """(3, 3) OpenCV intrinsics -> the rasterizer's (pixel centres at +0.5), after resizing by ``scale``."""
    out = rescale_intrinsics(K, scale)
    out[:2, 2] += RASTER_PIXEL_CENTRE
    return out
