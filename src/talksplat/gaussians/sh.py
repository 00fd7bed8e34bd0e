"""Spherical-harmonic (SH) colour of Gaussians: view-dependent RGB from per-Gaussian coefficients.

The basis is the real SH basis with the Condon-Shortley phase, in the order 3DGS and gsplat use
(degree l, then m = -l..l), so coefficients exported to a PLY read the same in their viewers:
``colour(d) = 0.5 + sum_k coeffs[k] * Y_k(d)`` for a unit direction ``d`` from the camera to the
Gaussian, clamped at 0. Two implementations:

- :func:`eval_sh`: the closed-form polynomials (fast, differentiable, used for rendering);
- :func:`eval_sh_reference`: the textbook definition through associated Legendre functions in
  spherical coordinates (scipy), slow and independent of the hand-written constants; tests compare
  the two and check known values.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

MAX_SH_DEGREE = 3
SH_C0 = 0.28209479177387814          # Y_0^0 = 1 / (2 sqrt(pi))
# Colours are stored as offsets from mid-grey (3DGS): an all-zero SH is grey, not black.
SH_COLOUR_OFFSET = 0.5
_C1 = 0.4886025119029199             # sqrt(3 / (4 pi))
_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
       1.445305721320277, -0.5900435899266435)


def num_sh_coefficients(degree: int) -> int:
    """(degree + 1)^2 basis functions up to ``degree``."""
    if not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"SH degree must be 0..{MAX_SH_DEGREE} (got {degree})")
    return (degree + 1) ** 2


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """The basis functions at unit directions ``dirs`` (N, 3): (N, (degree + 1)^2)."""
    num_sh_coefficients(degree)
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-_C1 * y, _C1 * z, -_C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [_C2[0] * xy, _C2[1] * yz, _C2[2] * (2 * zz - xx - yy), _C2[3] * xz, _C2[4] * (xx - yy)]
    if degree >= 3:
        out += [_C3[0] * y * (3 * xx - yy), _C3[1] * xy * z, _C3[2] * y * (4 * zz - xx - yy),
                _C3[3] * z * (2 * zz - 3 * xx - 3 * yy), _C3[4] * x * (4 * zz - xx - yy),
                _C3[5] * z * (xx - yy), _C3[6] * x * (xx - 3 * yy)]
    return torch.stack(out, dim=-1)


def eval_sh(degree: int, coeffs: Tensor, dirs: Tensor) -> Tensor:
    """RGB (N, 3) of coefficients ``coeffs`` (N, K >= (degree+1)^2, 3) seen along unit ``dirs`` (N, 3)."""
    k = num_sh_coefficients(degree)
    basis = sh_basis(degree, dirs)
    return ((basis[..., None] * coeffs[:, :k]).sum(1) + SH_COLOUR_OFFSET).clamp_min(0.0)


def rgb_to_sh_dc(rgb: Tensor) -> Tensor:
    """The degree-0 coefficient that shows ``rgb`` from every direction."""
    return (rgb - SH_COLOUR_OFFSET) / SH_C0


def view_directions(means: Tensor, w2c: Tensor) -> Tensor:
    """Unit directions (N, 3) from the camera centre of ``w2c`` to each Gaussian, in the world frame."""
    camera_centre = -w2c[:3, :3].T @ w2c[:3, 3]
    return torch.nn.functional.normalize(means - camera_centre, dim=-1)


# ----------------------------------------------------------------------------------------------- reference
def real_sh_reference(l: int, m: int, dirs: np.ndarray) -> np.ndarray:
    """Y_l^m at unit directions (N, 3), from the definition: K_l^m P_l^|m|(cos theta) times cos(m phi)
    (m > 0) or sin(|m| phi) (m < 0), sqrt(2) for m != 0; P with the Condon-Shortley phase (scipy)."""
    from scipy.special import lpmv

    x, y, z = (np.asarray(dirs, np.float64)[:, i] for i in range(3))
    theta, phi = np.arccos(np.clip(z, -1.0, 1.0)), np.arctan2(y, x)
    am = abs(m)
    norm = math.sqrt((2 * l + 1) / (4 * math.pi) * math.factorial(l - am) / math.factorial(l + am))
    legendre = lpmv(am, l, np.cos(theta))
    if m == 0:
        return norm * legendre
    angular = np.cos(am * phi) if m > 0 else np.sin(am * phi)
    return math.sqrt(2.0) * norm * legendre * angular


def eval_sh_reference(degree: int, coeffs: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """:func:`eval_sh` from :func:`real_sh_reference` (numpy, float64)."""
    basis = np.stack([real_sh_reference(l, m, dirs) for l in range(degree + 1) for m in range(-l, l + 1)], -1)
    rgb = (basis[..., None] * np.asarray(coeffs, np.float64)[:, :basis.shape[1]]).sum(1) + SH_COLOUR_OFFSET
    return np.maximum(rgb, 0.0)
