"""The fast CPU rasterizer against the pure-PyTorch reference, and the reference against autograd."""

from __future__ import annotations

import pytest
import torch

from talksplat.gaussians import _cpu, rasterize
from talksplat.gaussians.scenes import Scene, random_scene

needs_cpu_kernel = pytest.mark.skipif(not _cpu.status().available,
                                      reason=f"C++ kernel unavailable: {_cpu.status().detail}")

FORWARD_TOL = 1e-4
GRAD_REL_TOL = 1e-4


def _small_scene(n=120, width=45, height=37, seed=0, **kw) -> Scene:
    return random_scene(n, width, height, mean_radius_px=6.0, seed=seed, **kw)


def _with_gaussians_behind_and_offscreen(scene: Scene) -> Scene:
    means = scene.means.clone()
    means[0, 2] = -1.0   # behind the camera
    means[1, 2] = 0.005  # in front of the camera but closer than the near plane
    means[2, 0] = 50.0   # far off-screen to the right
    means[3, 1] = -40.0  # far off-screen above
    return Scene(means, *scene.gaussians()[1:], *scene.camera())


def _render(scene: Scene, backend: str, requires_grad=False, background=None):
    gaussians = [t.detach().clone().requires_grad_(requires_grad) for t in scene.gaussians()]
    viewmat, K, width, height = scene.camera()
    bg = background if background is not None else torch.zeros(scene.colors.shape[1])
    out = rasterize(*gaussians, viewmat.to(gaussians[0].dtype), K.to(gaussians[0].dtype), width, height,
                    bg.to(gaussians[0].dtype), backend=backend)
    return out, gaussians


def _assert_forward_agrees(scene: Scene, background=None):
    fast, _ = _render(scene, "cpu", background=background)
    ref, _ = _render(scene.to(torch.float64), "reference", background=background)
    assert fast.meta["backend"] == "cpu" and ref.meta["backend"] == "reference"
    for name, a, b in zip(("image", "alpha", "depth"), fast[:3], ref[:3]):
        assert a.shape == b.shape
        diff = (a.double() - b).abs().max().item()
        assert diff <= FORWARD_TOL * max(1.0, b.abs().max().item()), f"{name} differs by {diff}"
    assert torch.equal(fast.meta["visible"], ref.meta["visible"])
    assert fast.meta["n_isects"] == ref.meta["n_isects"]
    return fast, ref


@needs_cpu_kernel
@pytest.mark.parametrize("width,height", [(32, 32), (45, 37), (17, 70), (1, 1), (64, 48)])
def test_forward_matches_reference_at_odd_sizes(width, height):
    scene = random_scene(150, width, height, mean_radius_px=max(width, height) / 6, seed=width)
    fast, _ = _assert_forward_agrees(scene, background=torch.tensor([0.2, 0.5, 0.9]))
    assert fast.image.shape == (height, width, 3)
    assert fast.alpha.shape == (height, width, 1) and fast.depth.shape == (height, width, 1)


@needs_cpu_kernel
def test_forward_matches_reference_with_culled_gaussians():
    scene = _with_gaussians_behind_and_offscreen(_small_scene())
    fast, _ = _assert_forward_agrees(scene)
    assert not fast.meta["visible"][:4].any()
    assert (fast.meta["radii"][:4] == 0).all()
    assert fast.meta["visible"][4:].sum() > 50


@needs_cpu_kernel
def test_forward_matches_reference_when_nearly_opaque():
    # Many stacked opaque splats: most pixels terminate early (T < 1e-4).
    scene = random_scene(400, 40, 40, mean_radius_px=20.0, opacity_range=(0.9, 1.0), seed=3)
    fast, _ = _assert_forward_agrees(scene)
    # Without early termination 400 stacked opaque splats would leave T ~ 0; stopping leaves T > 1e-4.
    transmittance = 1.0 - fast.alpha
    stopped = (transmittance > 1e-4 * 0.999) & (transmittance < 0.01)
    assert stopped.float().mean() > 0.5


@needs_cpu_kernel
def test_forward_handles_many_feature_channels():
    scene = _small_scene(channels=32, seed=5)
    fast, _ = _assert_forward_agrees(scene)
    assert fast.image.shape[-1] == 32


def _gradients(scene: Scene, backend: str, weights):
    out, gaussians = _render(scene, backend, requires_grad=True, background=torch.tensor([0.3, 0.1, 0.7]))
    w_img, w_alpha, w_depth = (w.to(out.image.dtype) for w in weights)
    loss = (out.image * w_img).sum() + (out.alpha * w_alpha).sum() + (out.depth * w_depth).sum()
    loss.backward()
    return [g.grad.double() for g in gaussians]


@needs_cpu_kernel
@pytest.mark.parametrize("seed,opacity_range", [(0, (0.05, 0.9)), (1, (0.5, 1.0))])
def test_gradients_match_reference(seed, opacity_range):
    scene = _with_gaussians_behind_and_offscreen(_small_scene(seed=seed, opacity_range=opacity_range))
    gen = torch.Generator().manual_seed(seed)
    h, w = scene.height, scene.width
    weights = (torch.randn(h, w, 3, generator=gen), torch.randn(h, w, 1, generator=gen),
               torch.randn(h, w, 1, generator=gen))
    fast = _gradients(scene, "cpu", weights)
    ref = _gradients(scene.to(torch.float64), "reference", weights)
    for name, a, b in zip(("means", "quats", "scales", "opacities", "colors"), fast, ref):
        rel = ((a - b).norm() / b.norm()).item()
        assert rel <= GRAD_REL_TOL, f"{name}: relative gradient error {rel:.2e}"
        assert b.norm() > 0, f"{name}: reference gradient is zero, test is vacuous"
    # Culled Gaussians get exactly zero gradient.
    for grad in fast:
        assert grad[:4].abs().max() == 0


@needs_cpu_kernel
def test_means2d_gradient_is_available_for_densification():
    scene = _small_scene()
    out, _ = _render(scene, "cpu", requires_grad=True)
    out.meta["means2d"].retain_grad()
    out.image.sum().backward()
    grad2d = out.meta["means2d"].grad
    assert grad2d.shape == (scene.means.shape[0], 2)
    visible = out.meta["visible"]
    assert grad2d[visible].abs().sum() > 0
    assert grad2d[~visible].abs().sum() == 0


@needs_cpu_kernel
def test_result_does_not_depend_on_thread_count():
    scene = random_scene(3000, 96, 80, seed=7)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out, gaussians = _render(scene, "cpu", requires_grad=True)
            out.image.square().sum().backward()
            results.append((out.image, gaussians[0].grad))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


def test_reference_passes_gradcheck_in_float64():
    scene = random_scene(6, 12, 10, mean_radius_px=5.0, opacity_range=(0.2, 0.7), seed=11).to(torch.float64)
    viewmat, K, width, height = scene.camera()
    background = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)

    def render(means, quats, scales, opacities, colors):
        out = rasterize(means, quats, scales, opacities, colors, viewmat, K, width, height, background,
                        backend="reference")
        return out.image, out.alpha, out.depth

    inputs = [t.clone().requires_grad_() for t in scene.gaussians()]
    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_empty_scene_renders_background():
    scene = random_scene(0, 20, 10)
    out = rasterize(*scene.gaussians(), *scene.camera(), torch.tensor([0.25, 0.5, 1.0]))
    assert torch.allclose(out.image, torch.tensor([0.25, 0.5, 1.0]).expand(10, 20, 3))
    assert out.alpha.abs().max() == 0


def test_bad_shapes_raise_clear_errors():
    scene = random_scene(5, 8, 8)
    means, quats, scales, opacities, colors = scene.gaussians()
    with pytest.raises(ValueError, match="quats must have shape"):
        rasterize(means, quats[:, :3], scales, opacities, colors, *scene.camera())
    with pytest.raises(ValueError, match="background must have shape"):
        rasterize(*scene.gaussians(), *scene.camera(), torch.zeros(4))
    with pytest.raises(ValueError, match="unknown backend"):
        rasterize(*scene.gaussians(), *scene.camera(), backend="metal")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gsplat_backend_matches_cpu():  # pragma: no cover - no GPU in CI
    pytest.importorskip("gsplat")
    scene = _small_scene()
    cpu_out, _ = _render(scene, "cpu")
    cuda = [t.cuda() for t in scene.gaussians()]
    viewmat, K, width, height = scene.camera()
    gpu_out = rasterize(*cuda, viewmat.cuda(), K.cuda(), width, height, backend="auto")
    assert gpu_out.meta["backend"] == "gsplat"
    assert (gpu_out.image.cpu() - cpu_out.image).abs().max() < 2e-2


@needs_cpu_kernel
def test_non_finite_gaussians_are_culled_not_rendered():
    scene = _small_scene(seed=9)
    means = scene.means.clone()
    means[0] = float("nan")
    means[1, 2] = float("inf")
    scales = scene.scales.clone()
    scales[2] = float("nan")
    broken = Scene(means, scene.quats, scales, *scene.gaussians()[3:], *scene.camera())
    out, _ = _render(broken, "cpu")
    assert torch.isfinite(out.image).all() and torch.isfinite(out.alpha).all()
    assert not out.meta["visible"][:3].any()


@pytest.mark.parametrize("backend", [pytest.param("cpu", marks=needs_cpu_kernel), "reference"])
def test_without_depth_the_image_alpha_and_gradients_are_the_same(backend):
    """``with_depth=False`` drops one composited channel; nothing else may change."""
    scene = _small_scene(seed=3)
    viewmat, K, width, height = scene.camera()
    results = []
    for with_depth in (True, False):
        gaussians = [t.detach().clone().requires_grad_(True) for t in scene.gaussians()]
        out = rasterize(*gaussians, viewmat, K, width, height, backend=backend, with_depth=with_depth)
        assert (out.depth is None) == (not with_depth)
        (out.image.square().sum() + out.alpha.sum()).backward()
        results.append((out.image.detach(), out.alpha.detach(), [g.grad for g in gaussians]))
    (image_d, alpha_d, grads_d), (image, alpha, grads) = results
    torch.testing.assert_close(image, image_d, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(alpha, alpha_d, atol=1e-6, rtol=1e-5)
    assert float(image.abs().sum()) > 0
    for g, g_d in zip(grads, grads_d, strict=True):
        torch.testing.assert_close(g, g_d, atol=1e-5, rtol=1e-4)
