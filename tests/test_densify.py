"""Gaussian parameters, their optimizers, and adaptive density control."""

from __future__ import annotations

import math

import torch

from talksplat.gaussians import rasterize
from talksplat.gaussians.densify import DensifyStrategy, duplicate, remove, reset_opacity, split
from talksplat.gaussians.model import GaussianInitConfig, activated, init_params, make_optimizers


def _model(n=50, seed=0):
    gen = torch.Generator().manual_seed(seed)
    points = torch.randn(n, 3, generator=gen) * 0.2 + torch.tensor([0.0, 0.0, 2.0])
    params = init_params(points, torch.rand(n, 3, generator=gen), GaussianInitConfig())
    return params, make_optimizers(params, GaussianInitConfig().learning_rates)


def _take_a_step(params, optimizers):
    loss = sum(p.square().sum() for p in params.values())
    loss.backward()
    for opt in optimizers.values():
        opt.step()
        opt.zero_grad()


def _assert_consistent(params, optimizers, n):
    for name, p in params.items():
        assert p.shape[0] == n, name
        opt = optimizers[name]
        assert opt.param_groups[0]["params"][0] is p
        state = opt.state.get(p)
        if state:
            assert state["exp_avg"].shape == p.shape and state["exp_avg_sq"].shape == p.shape


def test_init_scales_follow_point_spacing():
    dense = init_params(torch.rand(200, 3) * 0.1, torch.rand(200, 3), GaussianInitConfig())
    sparse = init_params(torch.rand(200, 3) * 10.0, torch.rand(200, 3), GaussianInitConfig())
    assert dense["log_scales"].mean() < sparse["log_scales"].mean() - math.log(10)
    assert torch.allclose(torch.sigmoid(dense["opacity_logits"]), torch.tensor(0.1))


def test_duplicate_split_remove_keep_optimizers_in_step():
    params, optimizers = _model()
    _take_a_step(params, optimizers)
    mask = torch.zeros(50, dtype=torch.bool)
    mask[:5] = True
    duplicate(params, optimizers, mask)
    _assert_consistent(params, optimizers, 55)
    assert torch.equal(params["means"][50:], params["means"][:5])
    parent_means = params["means"][10:13].detach().clone()
    parent_log_scales = params["log_scales"][10:13].detach().clone()
    smask = torch.zeros(55, dtype=torch.bool)
    smask[10:13] = True
    split(params, optimizers, smask)
    _assert_consistent(params, optimizers, 58)
    children = params["means"][-6:].detach()
    # The two children of each parent sit symmetrically around it, with smaller scales.
    assert torch.allclose((children[:3] + children[3:]) / 2, parent_means, atol=1e-6)
    assert torch.allclose(params["log_scales"][-6:-3], parent_log_scales - math.log(1.6))
    remove(params, optimizers, torch.arange(58) % 2 == 0)
    _assert_consistent(params, optimizers, 29)
    _take_a_step(params, optimizers)  # Adam still works on the rebuilt tensors
    _assert_consistent(params, optimizers, 29)


def test_reset_opacity_caps_and_clears_moments():
    params, optimizers = _model()
    _take_a_step(params, optimizers)
    with torch.no_grad():
        params["opacity_logits"][:] = 3.0
    reset_opacity(params, optimizers, 0.01)
    assert torch.sigmoid(params["opacity_logits"]).max() <= 0.01 + 1e-6
    state = optimizers["opacity_logits"].state[params["opacity_logits"]]
    assert state["exp_avg"].abs().max() == 0


def _fit_steps(strategy, steps, n=200):
    """A few steps of fitting a 64x64 target: enough gradient to trigger growth."""
    params, optimizers = _model(n)
    target = torch.zeros(64, 64, 3)
    target[16:48, 16:48] = torch.tensor([1.0, 0.2, 0.1])
    K = torch.tensor([[80.0, 0, 32], [0, 80.0, 32], [0, 0, 1]])
    state = strategy.initial_state()
    changes = []
    for step in range(steps):
        g = activated(params)
        out = rasterize(g["means"], g["quats"], g["scales"], g["opacities"], g["colors"], torch.eye(4), K, 64, 64)
        strategy.step_pre_backward(out.meta)
        (out.image - target).abs().mean().backward()
        changes.append(strategy.step_post_backward(params, optimizers, state, step, out.meta, (64, 64)))
        for opt in optimizers.values():
            opt.step()
            opt.zero_grad()
        _assert_consistent(params, optimizers, params["means"].shape[0])
    return params, [c for c in changes if c]


def test_strategy_grows_where_gradients_are_large_and_respects_the_budget():
    strategy = DensifyStrategy(grow_grad2d=1e-5, refine_start=2, refine_every=2, reset_every=1000,
                               max_gaussians=260, prune_opacity=0.0, scene_extent=1.0)
    params, changes = _fit_steps(strategy, 7)
    assert changes and sum(c["cloned"] + c["split"] for c in changes) > 0
    assert params["means"].shape[0] <= 260


def test_strategy_prunes_transparent_gaussians():
    strategy = DensifyStrategy(grow_grad2d=1e9, refine_start=2, refine_every=2, reset_every=1000,
                               prune_opacity=0.5, scene_extent=1.0)
    params, changes = _fit_steps(strategy, 3)
    assert changes[0]["pruned"] > 150  # initial opacity 0.1 < 0.5
    assert params["means"].shape[0] == changes[0]["total"]
