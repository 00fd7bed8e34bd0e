"""A Gaussian set: trainable parameters, per-Gaussian attributes, optimizers and densification state.

Recipes declare their Gaussian sets (TalkingGaussian: ``face`` and ``mouth``; a mesh-rigged avatar:
one set whose ``attrs["triangle"]`` binds each Gaussian to a mesh triangle). The engine steps their
optimizers, runs densification and saves/restores everything here; densification resizes the
parameters, their Adam moments and every per-Gaussian attribute together, so attributes stay
aligned with their Gaussians.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from talksplat.gaussians.densify import DensifyState, DensifyStrategy
from talksplat.gaussians.model import (
    GaussianInitConfig,
    GaussianLearningRates,
    activated,
    init_params,
    make_optimizers,
)

DENSIFY_STATE_KEYS = ("grad2d_sum", "count", "max_radius")


@dataclass
class DensifyConfig:
    """When a set grows and prunes (steps are global training steps)."""

    max_gaussians: int = 30_000
    refine_every: int = 100
    refine_start: int = 200
    refine_stop: int = 15_000


class GaussianSet(nn.Module):
    """``params`` (nn.ParameterDict, one Adam optimizer per entry), ``attrs`` (non-trainable
    per-Gaussian tensors), a densification strategy and its state."""

    def __init__(self, points: Tensor, colors: Tensor, learning_rates: GaussianLearningRates,
                 densify: DensifyConfig, attrs: dict[str, Tensor] | None = None) -> None:
        super().__init__()
        self.params = init_params(points, colors, GaussianInitConfig(learning_rates=learning_rates))
        self._learning_rates = learning_rates
        self._optimizers: dict[str, torch.optim.Adam] | None = None
        self._pending_adam: dict[str, dict[str, Tensor]] = {}   # restored moments, until the optimizers exist
        extent = float((points.max(0).values - points.min(0).values).max()) if len(points) else 1.0
        self.strategy = DensifyStrategy(max_gaussians=densify.max_gaussians, scene_extent=extent,
                                        refine_start=densify.refine_start, refine_every=densify.refine_every,
                                        refine_stop=densify.refine_stop, reset_every=densify.refine_stop + 1)
        self.densify_state = DensifyState()
        self.attrs: dict[str, Tensor] = {}
        for name, value in (attrs or {}).items():
            self.set_attr(name, value)

    def __len__(self) -> int:
        return int(self.params["means"].shape[0])

    def _apply(self, fn, recurse: bool = True):
        """``.to(device)`` etc. also move what is not a parameter or buffer: the attributes, the
        densification statistics and the Adam moments (restored or live)."""
        super()._apply(fn, recurse)
        self.attrs = {name: fn(value) for name, value in self.attrs.items()}
        for key in DENSIFY_STATE_KEYS:
            value = getattr(self.densify_state, key)
            if value is not None:
                setattr(self.densify_state, key, fn(value))
        self._pending_adam = {name: _moved_state(state, fn) for name, state in self._pending_adam.items()}
        for optimizer in (self._optimizers or {}).values():
            for param, state in optimizer.state.items():
                optimizer.state[param] = _moved_state(state, fn)
        return self

    @property
    def optimizers(self) -> dict[str, torch.optim.Adam]:
        """One Adam per parameter, made on first use: the first optimizer a process builds imports
        torch._dynamo (seconds), which an avatar loaded only to render never needs."""
        if self._optimizers is None:
            self._optimizers = make_optimizers(self.params, self._learning_rates)
            for name, state in self._pending_adam.items():
                self._optimizers[name].state[self.params[name]] = state
            self._pending_adam = {}
        return self._optimizers

    def _adam_state(self, name: str) -> dict[str, Tensor]:
        if self._optimizers is None:
            return self._pending_adam.get(name, {})
        return self._optimizers[name].state.get(self.params[name], {})

    def set_attr(self, name: str, value: Tensor) -> None:
        if value.shape[0] != len(self):
            raise ValueError(f"attribute {name!r} has {value.shape[0]} rows for {len(self)} Gaussians")
        self.attrs[name] = value.detach().clone()

    def activated(self) -> dict[str, Tensor]:
        """Rasterizer inputs (means, quats, scales, opacities, colors) of the undeformed set."""
        return activated(self.params)

    # ------------------------------------------------------------------------------- training
    def step_pre_backward(self, meta: dict) -> None:
        self.strategy.step_pre_backward(meta)

    def step_post_backward(self, step: int, meta: dict, image_size: tuple[int, int]) -> dict[str, int]:
        return self.strategy.step_post_backward(self.params, self.optimizers, self.densify_state, step, meta,
                                                image_size, self.attrs)

    def step_optimizers(self, names: tuple[str, ...] | None) -> None:
        """Steps the optimizers of ``names`` (all when None); clears every gradient."""
        for name, optimizer in self.optimizers.items():
            if names is None or name in names:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    # ------------------------------------------------------------------------------- state
    def state_tensors(self, prefix: str) -> dict[str, Tensor]:
        """Parameters, Adam moments, densification statistics and attributes, as named tensors."""
        tensors: dict[str, Tensor] = {}
        for name, p in self.params.items():
            tensors[f"{prefix}/params/{name}"] = p.detach()
            for key, value in self._adam_state(name).items():
                tensors[f"{prefix}/adam/{name}/{key}"] = torch.as_tensor(value)
        for key in DENSIFY_STATE_KEYS:
            value = getattr(self.densify_state, key)
            if value is not None:
                tensors[f"{prefix}/densify/{key}"] = value
        for name, value in self.attrs.items():
            tensors[f"{prefix}/attrs/{name}"] = value
        return tensors

    def load_state_tensors(self, tensors: dict[str, Tensor], prefix: str) -> None:
        """Restores what :meth:`state_tensors` wrote (any number of Gaussians). KeyError/ValueError if
        the tensors do not describe this set."""
        n = None
        for name in list(self.params.keys()):
            value = tensors[f"{prefix}/params/{name}"]
            if value.ndim != self.params[name].ndim or value.shape[1:] != self.params[name].shape[1:]:
                raise ValueError(f"{prefix}/params/{name} has shape {tuple(value.shape)}, expected "
                                 f"(N, {', '.join(map(str, self.params[name].shape[1:]))})")
            n = value.shape[0] if n is None else n
            if value.shape[0] != n:
                raise ValueError(f"{prefix}/params/{name} has {value.shape[0]} rows, other parameters {n}")
            p = nn.Parameter(value.clone())
            self.params[name] = p
            state = {key.rsplit("/", 1)[1]: v.clone() for key, v in tensors.items()
                     if key.startswith(f"{prefix}/adam/{name}/")}
            if self._optimizers is None:
                self._pending_adam.pop(name, None)
                if state:
                    self._pending_adam[name] = state
                continue
            optimizer = self._optimizers[name]
            optimizer.param_groups[0]["params"] = [p]
            optimizer.state.clear()
            if state:
                optimizer.state[p] = state
        for key in DENSIFY_STATE_KEYS:
            setattr(self.densify_state, key, tensors.get(f"{prefix}/densify/{key}"))
        expected = set(self.attrs)
        found = {k[len(prefix) + 7:] for k in tensors if k.startswith(f"{prefix}/attrs/")}
        if found != expected:
            raise KeyError(f"{prefix} attributes {sorted(found)} do not match this recipe's {sorted(expected)}")
        for name in expected:
            self.set_attr(name, tensors[f"{prefix}/attrs/{name}"])


def _moved_state(state: dict, fn) -> dict:
    """An optimizer state with its tensors passed through ``fn`` (Adam's step count too, a tensor
    that PyTorch keeps on the host for CPU parameters)."""
    return {key: fn(value) if isinstance(value, Tensor) else value for key, value in state.items()}
