"""Tri-plane hash encoding: C++ kernel vs PyTorch reference, gradients, layout and API contracts."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from talksplat.fields import (
    HashGridConfig,
    TriPlaneHashEncoding,
    backend_status,
    grid_layout,
    init_embeddings,
    triplane_hash_encode,
)
from talksplat.fields._hashgrid_reference import HASH_PRIME_B, PLANE_AXES, vertex_index
from talksplat.fields.hashgrid import EMBEDDING_INIT_RANGE

FORWARD_TOLERANCE = 1e-5
GRADIENT_RELATIVE_TOLERANCE = 1e-4
# Keeps gradcheck's finite differences (eps 1e-6) inside one cell for every level.
GRADCHECK_CELL_MARGIN = 1e-3

_KERNEL_STATUS = backend_status()[0]
requires_kernel = pytest.mark.skipif(not _KERNEL_STATUS.available,
                                     reason=f"C++ hashgrid kernel unavailable: {_KERNEL_STATUS.detail}")


def mixed_config(features: int = 1) -> HashGridConfig:
    """Small grid whose two coarse levels are dense and two fine levels are hashed."""
    return HashGridConfig(num_levels=4, features_per_level=features, log2_hashmap_size=8,
                          base_resolution=4, desired_resolution=40)


def random_embeddings(config: HashGridConfig, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    # Much larger than the instant-ngp init so that interpolation errors are visible.
    generator = torch.Generator().manual_seed(seed)
    return init_embeddings(config, dtype=dtype, generator=generator).uniform_(-1.0, 1.0, generator=generator)


def awkward_points(n: int, bound: float, seed: int = 0) -> torch.Tensor:
    """Random points plus points exactly on the bound, outside it, and at the corners."""
    generator = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 3, generator=generator) * 2 - 1) * bound
    special = torch.tensor([
        [bound, bound, bound], [-bound, -bound, -bound], [bound, -bound, 0.3 * bound],
        [1.5 * bound, 0.2 * bound, -0.1 * bound], [-2.0 * bound, 3.0 * bound, -1.2 * bound],
        [0.0, 0.0, 0.0],
    ])
    k = min(n, special.shape[0])
    x[:k] = special[:k]
    return x


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).norm() / expected.norm().clamp_min(1e-30)).item()


def encode_with_grads(x, embeddings, config, backend, grad_out):
    x = x.clone().requires_grad_(True)
    embeddings = embeddings.clone().requires_grad_(True)
    out = triplane_hash_encode(x, embeddings, config, backend=backend)
    grad_x, grad_embeddings = torch.autograd.grad(out, (x, embeddings), grad_out)
    return out.detach(), grad_x, grad_embeddings


# -------------------------------------------------------------------------------- layout / config


def test_default_resolutions_follow_documented_formula():
    config = HashGridConfig()
    layout = grid_layout(config)
    scale = math.exp(math.log(256 / 16) / 11)
    assert layout.resolutions[0] == 16 and layout.resolutions[-1] == 256
    assert layout.resolutions == tuple(math.floor(16 * scale**level + 1e-6) for level in range(12))
    assert all(size == min(2**17, (r + 1) ** 2) for size, r in zip(layout.table_sizes, layout.resolutions))
    assert layout.offsets == (0, *itertools.accumulate(layout.table_sizes[:-1])), "levels must tile a plane"


def test_mixed_config_has_dense_and_hashed_levels():
    layout = grid_layout(mixed_config())
    assert layout.hashed == (False, False, True, True)
    assert layout.table_sizes[2:] == (256, 256)


def test_finest_resolution_scales_with_bound():
    assert grid_layout(HashGridConfig(bound=2.0)).resolutions[-1] == 512


def test_hash_matches_instant_ngp_formula():
    ia, ib, table_size = torch.tensor([3, 40]), torch.tensor([5, 7]), 256
    expected = [((a ^ (b * HASH_PRIME_B)) & 0xFFFFFFFF) % table_size for a, b in ((3, 5), (40, 7))]
    assert vertex_index(ia, ib, 40, table_size, hashed=True).tolist() == expected
    assert vertex_index(ia, ib, 40, table_size, hashed=False).tolist() == [3 + 5 * 41, 40 + 7 * 41]


@pytest.mark.parametrize("kwargs", [
    {"num_levels": 0}, {"features_per_level": 0}, {"bound": 0.0},
    {"base_resolution": 64, "desired_resolution": 32}, {"log2_hashmap_size": 31, "features_per_level": 2},
])
def test_invalid_config_rejected(kwargs):
    with pytest.raises(ValueError):
        HashGridConfig(**kwargs)


# ------------------------------------------------------------------------------ API contracts


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpu", marks=requires_kernel)])
def test_output_shape_and_batch_dims(backend):
    config = mixed_config(features=2)
    embeddings = random_embeddings(config)
    x = awkward_points(30, config.bound).reshape(5, 6, 3)
    out = triplane_hash_encode(x, embeddings, config, backend=backend)
    assert out.shape == (5, 6, 3 * 4 * 2) == (5, 6, config.output_dim)
    flat = triplane_hash_encode(x.reshape(-1, 3), embeddings, config, backend=backend)
    torch.testing.assert_close(out.reshape(-1, config.output_dim), flat)


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpu", marks=requires_kernel)])
def test_empty_input(backend):
    config = mixed_config()
    out = triplane_hash_encode(torch.zeros(0, 3), random_embeddings(config), config, backend=backend)
    assert out.shape == (0, config.output_dim)


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpu", marks=requires_kernel)])
def test_plane_channels_depend_only_on_their_axes(backend):
    config = mixed_config(features=2)
    embeddings = random_embeddings(config)
    x = awkward_points(50, config.bound, seed=1)[10:]  # only interior points
    base = triplane_hash_encode(x, embeddings, config, backend=backend)
    per_plane = config.num_levels * config.features_per_level
    for axis in range(3):
        moved = x.clone()
        moved[:, axis] = moved[:, axis] * 0.5 + 0.1
        changed = triplane_hash_encode(moved, embeddings, config, backend=backend)
        for plane, axes in enumerate(PLANE_AXES):
            channels = slice(plane * per_plane, (plane + 1) * per_plane)
            if axis in axes:
                assert not torch.allclose(changed[:, channels], base[:, channels]), (axis, plane)
            else:
                assert torch.equal(changed[:, channels], base[:, channels]), (axis, plane)


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpu", marks=requires_kernel)])
def test_outside_points_clamp_to_border_with_zero_gradient(backend):
    config = mixed_config()
    embeddings = random_embeddings(config)
    x = torch.tensor([[1.7, 0.2, -3.0], [-1.2, 0.5, 0.1]])
    clamped = x.clamp(-config.bound, config.bound)
    grad_out = torch.randn(2, config.output_dim, generator=torch.Generator().manual_seed(0))
    out, grad_x, _ = encode_with_grads(x, embeddings, config, backend, grad_out)
    torch.testing.assert_close(out, triplane_hash_encode(clamped, embeddings, config, backend=backend))
    outside = x.abs() > config.bound
    assert torch.all(grad_x[outside] == 0)
    assert torch.all(grad_x[~outside] != 0)


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpu", marks=requires_kernel)])
def test_input_gradients_flag_treats_x_as_constant(backend):
    config = mixed_config()
    x = awkward_points(20, config.bound).requires_grad_(True)
    embeddings = random_embeddings(config).requires_grad_(True)
    triplane_hash_encode(x, embeddings, config, backend=backend, input_gradients=False).sum().backward()
    assert x.grad is None
    assert embeddings.grad is not None and embeddings.grad.abs().sum() > 0


def test_module_parameters_and_init_range():
    module = TriPlaneHashEncoding(mixed_config(features=2), backend="reference")
    (param,) = list(module.parameters())
    assert param.shape == (3, grid_layout(module.config).entries_per_plane, 2)
    assert param.abs().max() <= EMBEDDING_INIT_RANGE and param.std() > EMBEDDING_INIT_RANGE / 4
    out = module(awkward_points(8, 1.0))
    assert out.shape == (8, module.output_dim)
    out.square().sum().backward()
    assert param.grad is not None and param.grad.abs().sum() > 0


def test_backend_status_names():
    names = [status.name for status in backend_status()]
    assert names == ["hashgrid (cpu)", "hashgrid (reference)"]
    assert backend_status()[1].available


def test_auto_uses_reference_for_float64():
    config = mixed_config()
    out = triplane_hash_encode(awkward_points(5, 1.0).double(), random_embeddings(config, dtype=torch.float64),
                               config, backend="auto")
    assert out.dtype == torch.float64


@requires_kernel
def test_cpu_backend_rejects_float64():
    config = mixed_config()
    with pytest.raises(ValueError, match="float32"):
        triplane_hash_encode(awkward_points(5, 1.0).double(), random_embeddings(config, dtype=torch.float64),
                             config, backend="cpu")


def test_bad_shapes_and_backend_rejected():
    config = mixed_config()
    embeddings = random_embeddings(config)
    with pytest.raises(ValueError, match="x must have shape"):
        triplane_hash_encode(torch.zeros(4, 2), embeddings, config)
    with pytest.raises(ValueError, match="embeddings must have shape"):
        triplane_hash_encode(torch.zeros(4, 3), embeddings[:, :-1], config)
    with pytest.raises(ValueError, match="backend"):
        triplane_hash_encode(torch.zeros(4, 3), embeddings, config, backend="cuda")


# ---------------------------------------------------------------------- kernel vs reference


@requires_kernel
@pytest.mark.parametrize("features", [1, 2, 3])  # 3 exercises the kernel's run-time feature count
@pytest.mark.parametrize("n", [1, 7, 1003])
def test_kernel_forward_matches_reference(features, n):
    config = mixed_config(features)
    embeddings = random_embeddings(config, seed=features)
    x = awkward_points(n, config.bound, seed=n)
    fast = triplane_hash_encode(x, embeddings, config, backend="cpu")
    reference = triplane_hash_encode(x, embeddings, config, backend="reference")
    assert (fast - reference).abs().max().item() <= FORWARD_TOLERANCE


@requires_kernel
@pytest.mark.parametrize("config", [HashGridConfig(), HashGridConfig(bound=2.0, log2_hashmap_size=14)],
                         ids=["defaults", "bound2-hashed"])
def test_kernel_forward_matches_reference_realistic_configs(config):
    embeddings = random_embeddings(config)
    x = awkward_points(2001, config.bound, seed=3)
    fast = triplane_hash_encode(x, embeddings, config, backend="cpu")
    reference = triplane_hash_encode(x, embeddings, config, backend="reference")
    assert (fast - reference).abs().max().item() <= FORWARD_TOLERANCE


@requires_kernel
def test_kernel_accepts_non_contiguous_inputs():
    config = mixed_config()
    embeddings = random_embeddings(config)
    x = awkward_points(40, config.bound).t().contiguous().t()  # same values, transposed strides
    assert not x.is_contiguous()
    torch.testing.assert_close(triplane_hash_encode(x, embeddings, config, backend="cpu"),
                               triplane_hash_encode(x, embeddings, config, backend="reference"))


@requires_kernel
@pytest.mark.parametrize("features", [1, 2, 3])
@pytest.mark.parametrize("n", [5, 1003])
def test_kernel_gradients_match_reference(features, n):
    config = mixed_config(features)
    embeddings = random_embeddings(config, seed=10 + features)
    x = awkward_points(n, config.bound, seed=20 + n)
    grad_out = torch.randn(n, config.output_dim, generator=torch.Generator().manual_seed(n))
    _, fast_x, fast_embeddings = encode_with_grads(x, embeddings, config, "cpu", grad_out)
    _, ref_x, ref_embeddings = encode_with_grads(x, embeddings, config, "reference", grad_out)
    assert relative_error(fast_embeddings, ref_embeddings) <= GRADIENT_RELATIVE_TOLERANCE
    assert relative_error(fast_x, ref_x) <= GRADIENT_RELATIVE_TOLERANCE


@requires_kernel
def test_kernel_results_do_not_depend_on_thread_count():
    # Each table is accumulated by one thread in point order, so gradients are bitwise reproducible.
    config = HashGridConfig(num_levels=5, log2_hashmap_size=12)
    embeddings = random_embeddings(config)
    x = awkward_points(3000, config.bound)
    grad_out = torch.randn(3000, config.output_dim, generator=torch.Generator().manual_seed(0))
    previous = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(encode_with_grads(x, embeddings, config, "cpu", grad_out))
    finally:
        torch.set_num_threads(previous)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


# ------------------------------------------------------------------------------ reference


def points_away_from_cell_boundaries(config: HashGridConfig, n: int) -> torch.Tensor:
    """Random float64 points whose every level coordinate is >= GRADCHECK_CELL_MARGIN from a cell edge."""
    generator = torch.Generator().manual_seed(7)
    x = (torch.rand(4 * n, 3, generator=generator, dtype=torch.float64) * 1.8 - 0.9) * config.bound
    u = (x + config.bound) / (2 * config.bound)
    keep = torch.ones(x.shape[0], dtype=torch.bool)
    for resolution in grid_layout(config).resolutions:
        frac = torch.frac(u * resolution)
        keep &= ((frac > GRADCHECK_CELL_MARGIN) & (frac < 1 - GRADCHECK_CELL_MARGIN)).all(dim=1)
    assert keep.sum() >= n
    return x[keep][:n]


def test_reference_gradcheck_float64():
    config = HashGridConfig(num_levels=2, features_per_level=2, log2_hashmap_size=5,
                            base_resolution=3, desired_resolution=7)
    assert grid_layout(config).hashed == (False, True)
    x = points_away_from_cell_boundaries(config, n=6).requires_grad_(True)
    embeddings = random_embeddings(config, dtype=torch.float64).requires_grad_(True)

    def encode(points, tables):
        return triplane_hash_encode(points, tables, config, backend="reference")

    assert torch.autograd.gradcheck(encode, (x, embeddings), eps=1e-6, atol=1e-6)
