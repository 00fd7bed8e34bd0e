"""3DGS adaptive density control as a strategy object (in the spirit of gsplat's ``DefaultStrategy``).

Usage in a training loop::

    strategy = DensifyStrategy(...)
    state = strategy.initial_state()
    for step in range(iters):
        out = rasterize(...)
        strategy.step_pre_backward(out.meta)       # retains the 2D means' gradient
        loss.backward()
        strategy.step_post_backward(params, optimizers, state, step, out.meta, image_size)
        for opt in optimizers.values(): opt.step(); opt.zero_grad()

Per-Gaussian attributes that are not trained (a region label, the index of the mesh triangle a
Gaussian is bound to, ...) travel in ``attrs``, a dict of tensors whose first dimension is the number
of Gaussians: every op below resizes them together with the parameters, so they stay aligned (a clone
or split child inherits its parent's values), as gsplat's strategy ops do with the caller's state.

Rules (3DGS): every ``refine_every`` steps inside [refine_start, refine_stop), Gaussians whose mean
screen-space gradient exceeds ``grow_grad2d`` are cloned (small ones) or split in two (large ones);
Gaussians with opacity < ``prune_opacity`` or too large are removed; every ``reset_every`` steps
opacities are clamped down to ``reset_opacity`` so floaters can die. ``max_gaussians`` caps growth,
which a CPU budget needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class DensifyState:
    grad2d_sum: Tensor | None = None  # [N] accumulated norm of the 2D-mean gradient (NDC-scaled)
    count: Tensor | None = None       # [N] times each Gaussian was visible
    max_radius: Tensor | None = None  # [N] largest screen radius seen, as a fraction of the image


@dataclass
class DensifyStrategy:
    grow_grad2d: float = 2e-4
    grow_scale3d: float = 0.01     # split above, clone below (fraction of the scene extent)
    prune_opacity: float = 0.005
    prune_scale3d: float = 0.1     # remove Gaussians larger than this fraction of the scene extent
    prune_radius2d: float = 0.15   # ... or covering more than this fraction of the image
    refine_start: int = 500
    refine_stop: int = 15_000
    refine_every: int = 100
    reset_every: int = 3_000
    reset_opacity: float = 0.01
    max_gaussians: int = 30_000
    scene_extent: float = 1.0

    def initial_state(self) -> DensifyState:
        return DensifyState()

    def step_pre_backward(self, meta: dict) -> None:
        meta["means2d"].retain_grad()

    @torch.no_grad()
    def step_post_backward(self, params: nn.ParameterDict, optimizers: dict, state: DensifyState,
                           step: int, meta: dict, image_size: tuple[int, int],
                           attrs: dict[str, Tensor] | None = None) -> dict[str, int]:
        """Accumulates statistics and, on refinement steps, grows/prunes (``attrs`` follow their
        Gaussians). Returns counts of changes."""
        if step >= self.refine_stop:
            return {}
        self._accumulate(state, meta, image_size, params["means"].shape[0])
        changes = {}
        if step >= self.refine_start and step % self.refine_every == 0 and step > 0:
            changes = self._refine(params, optimizers, state, attrs)
        if step > 0 and step % self.reset_every == 0:
            reset_opacity(params, optimizers, self.reset_opacity)
        return changes

    def _accumulate(self, state: DensifyState, meta: dict, image_size: tuple[int, int], n: int) -> None:
        device = meta["means2d"].device
        if state.count is None or state.count.shape[0] != n:
            state.grad2d_sum, state.count, state.max_radius = (torch.zeros(n, device=device) for _ in range(3))
        grad = meta["means2d"].grad
        if grad is None:
            return
        if grad.ndim == 3:      # gsplat's means2d carry a leading camera axis (one camera here)
            grad = grad[0]
        width, height = image_size
        # Pixel gradients -> NDC units (x W/2, y H/2) so thresholds match 3DGS at any resolution.
        grad = grad * torch.tensor([width / 2.0, height / 2.0], device=device)
        visible = meta["visible"]
        state.grad2d_sum[visible] += grad[visible].norm(dim=-1)
        state.count[visible] += 1
        radius = meta["radii"].float().max(dim=-1).values / max(width, height)
        state.max_radius = torch.maximum(state.max_radius, radius)

    def _refine(self, params, optimizers, state: DensifyState, attrs: dict[str, Tensor] | None) -> dict[str, int]:
        mean_grad = state.grad2d_sum / state.count.clamp_min(1)
        scales = torch.exp(params["log_scales"]).max(dim=-1).values
        too_wide_on_screen = state.max_radius > self.prune_radius2d
        grow = (mean_grad > self.grow_grad2d) & ~too_wide_on_screen
        small = scales <= self.grow_scale3d * self.scene_extent
        budget = max(self.max_gaussians - params["means"].shape[0], 0)
        clone_mask, split_mask = _within_budget(grow & small, grow & ~small, mean_grad, budget)
        n_clone, n_split = int(clone_mask.sum()), int(split_mask.sum())
        # Track the screen-size verdict through the reordering that cloning and splitting do.
        device = params["means"].device
        no_clones = torch.zeros(n_clone, dtype=torch.bool, device=device)
        duplicate(params, optimizers, clone_mask, attrs)
        split_mask = torch.cat([split_mask, no_clones])
        too_wide_on_screen = torch.cat([too_wide_on_screen, no_clones])
        split(params, optimizers, split_mask, attrs=attrs)
        too_wide_on_screen = torch.cat([too_wide_on_screen[~split_mask],
                                        torch.zeros(2 * n_split, dtype=torch.bool, device=device)])
        opacities = torch.sigmoid(params["opacity_logits"])
        scales = torch.exp(params["log_scales"]).max(dim=-1).values
        prune = (opacities < self.prune_opacity) | (scales > self.prune_scale3d * self.scene_extent)
        prune |= too_wide_on_screen
        remove(params, optimizers, prune, attrs)
        n = params["means"].shape[0]
        state.grad2d_sum, state.count, state.max_radius = (torch.zeros(n, device=device) for _ in range(3))
        return {"cloned": n_clone, "split": n_split, "pruned": int(prune.sum()), "total": n}


def _within_budget(clone: Tensor, split_: Tensor, score: Tensor, budget: int) -> tuple[Tensor, Tensor]:
    """Keeps the highest-gradient candidates when growing all of them would exceed the budget."""
    candidates = clone | split_
    if int(candidates.sum()) <= budget:
        return clone, split_
    keep = torch.zeros_like(candidates)
    if budget > 0:
        ranked = torch.where(candidates, score, torch.full_like(score, -math.inf))
        keep[ranked.topk(budget).indices] = True
    return clone & keep, split_ & keep


def _update_param(params: nn.ParameterDict, optimizers: dict, name: str, fn_param, fn_state) -> None:
    """Replaces params[name] by fn_param(old) and maps its Adam moments with fn_state."""
    old = params[name]
    new = nn.Parameter(fn_param(old.data))
    optimizer = optimizers[name]
    state = optimizer.state.pop(old, None)
    optimizer.param_groups[0]["params"] = [new]
    if state is not None:
        optimizer.state[new] = {k: (fn_state(v) if torch.is_tensor(v) and v.ndim > 0 else v)
                                for k, v in state.items()}
    params[name] = new


def _resize_attrs(attrs: dict[str, Tensor] | None, fn) -> None:
    """Applies the same row operation to every per-Gaussian attribute (in place in the dict)."""
    for name in list(attrs or ()):
        attrs[name] = fn(attrs[name])


def duplicate(params: nn.ParameterDict, optimizers: dict, mask: Tensor, attrs: dict[str, Tensor] | None = None) -> None:
    """Appends copies of the masked Gaussians (fresh optimizer moments for the copies)."""
    if not mask.any():
        return
    _resize_attrs(attrs, lambda a: torch.cat([a, a[mask]]))
    for name in list(params.keys()):
        _update_param(params, optimizers, name, lambda p: torch.cat([p, p[mask]]),
                      lambda s: torch.cat([s, torch.zeros_like(s[mask])]))


def split(params: nn.ParameterDict, optimizers: dict, mask: Tensor, factor: float = 1.6,
          attrs: dict[str, Tensor] | None = None) -> None:
    """Replaces each masked Gaussian by two smaller ones sampled inside it (3DGS: scale / 1.6)."""
    if not mask.any():
        return
    scales = torch.exp(params["log_scales"][mask])
    rotations = _quat_to_rotmat(params["quats"][mask])
    offsets = torch.einsum("nij,nj->ni", rotations, torch.randn_like(scales) * scales)
    new_values = {
        "means": torch.cat([params["means"][mask] + offsets, params["means"][mask] - offsets]),
        "log_scales": (params["log_scales"][mask] - math.log(factor)).repeat(2, 1),
    }
    keep = ~mask
    _resize_attrs(attrs, lambda a: torch.cat([a[keep], a[mask].repeat(2, *([1] * (a.ndim - 1)))]))
    for name in list(params.keys()):
        def rebuild(p, name=name):
            added = new_values.get(name, p[mask].repeat(2, *([1] * (p.ndim - 1))))
            return torch.cat([p[keep], added])

        _update_param(params, optimizers, name, rebuild,
                      lambda s: torch.cat([s[keep], torch.zeros_like(s[mask]).repeat(2, *([1] * (s.ndim - 1)))]))


def remove(params: nn.ParameterDict, optimizers: dict, mask: Tensor, attrs: dict[str, Tensor] | None = None) -> None:
    if not mask.any():
        return
    keep = ~mask
    _resize_attrs(attrs, lambda a: a[keep])
    for name in list(params.keys()):
        _update_param(params, optimizers, name, lambda p: p[keep], lambda s: s[keep])


def reset_opacity(params: nn.ParameterDict, optimizers: dict, value: float) -> None:
    """Clamps opacities to at most ``value`` and clears their optimizer moments."""
    ceiling = math.log(value / (1 - value))
    _update_param(params, optimizers, "opacity_logits", lambda p: p.clamp_max(ceiling), torch.zeros_like)


def _quat_to_rotmat(quats: Tensor) -> Tensor:
    from talksplat.gaussians._reference import quat_to_rotmat

    return quat_to_rotmat(quats)
