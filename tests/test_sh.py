"""Spherical-harmonic colour (gaussians.sh): closed form vs the textbook definition, known values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from talksplat.gaussians.sh import (
    SH_C0,
    eval_sh,
    eval_sh_reference,
    num_sh_coefficients,
    rgb_to_sh_dc,
    sh_basis,
    view_directions,
)


def _directions(n: int, seed: int = 0) -> torch.Tensor:
    d = torch.from_numpy(np.random.default_rng(seed).standard_normal((n, 3)))
    return torch.nn.functional.normalize(d, dim=-1)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_closed_form_matches_the_legendre_definition(degree):
    dirs = _directions(200)
    coeffs = torch.from_numpy(np.random.default_rng(1).standard_normal((200, 16, 3))) * 0.3
    fast = eval_sh(degree, coeffs, dirs).numpy()
    reference = eval_sh_reference(degree, coeffs.numpy(), dirs.numpy())
    assert np.abs(fast - reference).max() < 1e-9


def test_known_values():
    z_axis = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    x_axis = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    assert float(sh_basis(0, z_axis)[0, 0]) == pytest.approx(1 / (2 * math.sqrt(math.pi)))
    # Y_1^0 = sqrt(3 / 4 pi) cos(theta); Y_2^0 = sqrt(5 / 16 pi) (3 cos^2 - 1); along x: Y_1^1 = -sqrt(3 / 4 pi)
    assert float(sh_basis(1, z_axis)[0, 2]) == pytest.approx(math.sqrt(3 / (4 * math.pi)))
    assert float(sh_basis(2, z_axis)[0, 6]) == pytest.approx(math.sqrt(5 / (16 * math.pi)) * 2)
    assert float(sh_basis(1, x_axis)[0, 3]) == pytest.approx(-math.sqrt(3 / (4 * math.pi)))
    assert num_sh_coefficients(3) == 16


def test_basis_is_orthonormal_on_the_sphere():
    dirs = _directions(200_000, seed=3)
    basis = sh_basis(3, dirs)
    gram = (basis.T @ basis) * (4 * math.pi / len(dirs))     # Monte Carlo integral over the sphere
    assert torch.allclose(gram, torch.eye(16, dtype=gram.dtype), atol=0.03)


def test_dc_coefficient_gives_the_colour_from_every_direction_and_is_differentiable():
    rgb = torch.tensor([[0.2, 0.5, 0.9]])
    coeffs = torch.zeros(1, 9, 3)
    coeffs[:, 0] = rgb_to_sh_dc(rgb)
    coeffs.requires_grad_(True)
    for d in _directions(5).float():
        assert torch.allclose(eval_sh(2, coeffs, d[None]), rgb, atol=1e-6)
    eval_sh(2, coeffs, _directions(1).float()).sum().backward()
    assert coeffs.grad is not None and float(coeffs.grad[0, 0].abs().sum()) == pytest.approx(3 * SH_C0)


def test_view_directions_point_from_the_camera_to_the_gaussians():
    w2c = torch.eye(4)
    w2c[:3, 3] = torch.tensor([0.0, 0.0, 5.0])       # camera at world (0, 0, -5)
    d = view_directions(torch.tensor([[0.0, 0.0, 0.0], [0.0, 3.0, -1.0]]), w2c)
    assert torch.allclose(d, torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.6, 0.8]]), atol=1e-6)


def test_bad_degree_is_refused():
    with pytest.raises(ValueError, match="SH degree"):
        num_sh_coefficients(4)
