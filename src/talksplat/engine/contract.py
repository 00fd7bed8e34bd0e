"""The recipe contract: what a paper's method declares, and what the engine does with it.

A recipe (``talksplat/recipes/<paper>.py``) is configuration and composition of shared parts:

- ``Config``: a typed dataclass (subclass of :class:`RecipeConfig`) with its stages' iterations under
  ``iterations`` and its loss weights under ``losses`` (one float per named loss term);
- ``stages()``: the stages in order (:class:`Stage`: name, iterations, which optimizer groups train,
  whether Gaussian sets densify, whether the deformation runs, which frame sampler);
- ``self.sets``: its Gaussian sets (``nn.ModuleDict`` of :class:`GaussianSet`), each with its own
  per-parameter optimizers and densification; per-Gaussian attributes survive densification;
- ``network_param_groups()``: named parameter groups of its networks, each with a learning rate;
- ``forward(view, conditions, stage) -> outputs``: renders one view (``conditions`` None = the
  undeformed canonical avatar); outputs hold ``image`` (H, W, 3), ``alpha`` (H, W, 1), ``head``
  (premultiplied rendered colour, to composite over another backdrop) and ``metas`` (per Gaussian set,
  the rasterizer's meta that densification reads);
- ``training_conditions(frame, stage)`` and ``conditions(frame)``: per-frame conditions while
  training (may be teacher-forced) and at inference from the subject's own recording;
- ``losses(outputs, batch, stage) -> {name: tensor}``: unweighted terms; the engine multiplies each by
  ``config.losses.<name>`` and sums (a new term needs no engine change);
- ``conditioner()``: an :class:`Conditioner` for rendering new audio (declares its look-ahead).

A recipe built to receive a checkpoint's weights for rendering (``engine.avatar.load_avatar``) sees
``self.weights_from_checkpoint`` True: it may skip initialisation that only produces starting values
(seeding Gaussians from the frames, closed-form fits stored as weights), keeping every shape.

The engine (``engine.trainer``) owns everything else: seeding, frame sampling, summing losses,
optimizers, densification, held-out evaluation, previews, checkpoints and bitwise resume.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from talksplat.data.samplers import Sampler, make_sampler
from talksplat.data.subject import SubjectData
from talksplat.engine.config import RecipeConfig

Conditions = dict[str, Tensor]

_WEIGHTS_FROM_CHECKPOINT = contextvars.ContextVar("talksplat_weights_from_checkpoint", default=False)


@contextlib.contextmanager
def building_to_load_weights():
    """Recipes built inside this get their weights from a checkpoint at once, to render (not to
    train on): loading an avatar then skips seconds of fitting whose results the checkpoint replaces."""
    token = _WEIGHTS_FROM_CHECKPOINT.set(True)
    try:
        yield
    finally:
        _WEIGHTS_FROM_CHECKPOINT.reset(token)


def placeholder_points(n: int = 4) -> tuple[Tensor, Tensor]:
    """Distinct points and grey colours standing in for seeded Gaussians whose parameters a
    checkpoint is about to replace (any number of Gaussians restores)."""
    points = torch.eye(max(n, 4), 3, dtype=torch.float32) + torch.arange(max(n, 4), dtype=torch.float32)[:, None]
    return points, torch.full((len(points), 3), 0.5)


@dataclass(frozen=True)
class Stage:
    """One training stage.

    ``trains`` selects the optimizer groups that step: ``"gaussians"`` (every parameter of every
    Gaussian set), ``"gaussians.<param>"`` (that parameter of every set, e.g. ``gaussians.colors``),
    ``"<set>.<param>"``, ``"networks"`` (every network group) or ``"networks.<group>"``.
    """

    name: str
    iterations: int
    trains: tuple[str, ...]
    densify: bool = False
    deform: bool = False
    sampler: str = "uniform"


@dataclass
class View:
    """What to render: the camera and backdrop of source frame ``frame`` unless overridden."""

    frame: int
    w2c: Tensor | None = None
    backdrop: Tensor | None = None


@dataclass
class Batch:
    """One training example: a frame index and its target image."""

    frame: int
    image: Tensor


class Conditioner:
    """Turns a clip's audio features into per-frame conditions at render time.

    ``look_behind``/``look_ahead``: how many neighbouring frames' audio windows frame ``t``'s
    conditions depend on (streaming waits for ``look_ahead`` frames of audio). ``expression_modes``:
    what drives the non-mouth expression (``video``: the pose's source frame; ``neutral``: the
    training median; recipes may add e.g. ``generated``), ``default_expression`` the one render uses
    unless told.
    """

    audio_feature: str = "mel"
    look_behind: int = 0
    look_ahead: int = 0
    expression_modes: tuple[str, ...] = ("video", "neutral")
    # The mode ``render`` uses when none is asked for (a recipe with an expression generator may
    # prefer its ``generated``).
    default_expression: str = "video"

    def conditions(self, windows: Tensor, index: int, source_frame: int, expression: str) -> Conditions:
        """Conditions of the frame whose audio window is ``windows[index]`` (its neighbours around it),
        posed like ``source_frame``."""
        raise NotImplementedError


class Recipe(nn.Module):
    """Base class of every recipe (see the module docstring). Subclasses set the class attributes."""

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    Config: ClassVar[type[RecipeConfig]] = RecipeConfig
    # Per-frame channels of the subject the recipe reads (data.subject); checked before building.
    required_channels: ClassVar[tuple[str, ...]] = ("frames", "masks", "w2c")
    # ``--quality`` presets (dotted config names -> values); "default" should be empty.
    presets: ClassVar[dict[str, dict[str, object]]] = {"default": {}}
    # Settings for the conformance test's tiny run through every stage (seconds on a CPU); each
    # stage must have enough iterations for densification to grow and prune at least once.
    test_overrides: ClassVar[dict[str, object]] = {}
    # Devices the recipe trains and renders on (engine.device; ``--device``). A recipe lists "cuda"
    # once every tensor it makes follows its parameters' device.
    devices: ClassVar[tuple[str, ...]] = ("cpu",)

    def __init__(self, data: SubjectData, cfg: RecipeConfig, rng: np.random.Generator) -> None:
        super().__init__()
        self.data, self.cfg, self.rng = data, cfg, rng
        self.sets = nn.ModuleDict()
        self.weights_from_checkpoint = _WEIGHTS_FROM_CHECKPOINT.get()

    # ------------------------------------------------------------------ declared by every recipe
    def stages(self) -> list[Stage]:
        raise NotImplementedError

    def network_param_groups(self) -> list[dict]:
        """``[{"name": ..., "params": [...], "lr": ...}, ...]`` (names unique)."""
        return []

    def forward(self, view: View, conditions: Conditions | None, stage: Stage | None = None) -> dict:
        raise NotImplementedError

    def training_conditions(self, frame: int, stage: Stage) -> Conditions | None:
        return self.conditions(frame)

    def conditions(self, frame: int) -> Conditions | None:
        raise NotImplementedError

    def losses(self, outputs: dict, batch: Batch, stage: Stage) -> dict[str, Tensor]:
        raise NotImplementedError

    def conditioner(self) -> Conditioner:
        raise NotImplementedError

    # ------------------------------------------------------------------ defaults
    def to_device(self, device: torch.device) -> Recipe:
        """Moves the parameters, buffers (and whatever a part moves in its ``_apply``) and the
        subject's tensors to ``device``; returns self."""
        self.to(device)
        self.data.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.data.device

    def sampler(self, stage: Stage) -> Sampler:
        return make_sampler(stage.sampler, self.data)

    def loss_weights(self) -> dict[str, float]:
        return dataclasses.asdict(self.cfg.losses)

    def post_render(self, frame: int, outputs: dict) -> dict:
        """A post-render stage (e.g. a torso restorer) applied at inference; identity by default."""
        return outputs

    def summary_extras(self) -> dict:
        """Recipe facts for the run summary."""
        return {}

    @torch.no_grad()
    def canonical_gaussians(self) -> dict[str, dict[str, Tensor]]:
        """Per Gaussian set, the Gaussians ``forward(View(first training frame), None)`` draws, in the
        world frame (for export): the sets' own parameters unless a recipe stores them otherwise
        (e.g. relative to mesh triangles)."""
        return {name: {k: v.detach().clone() for k, v in gaussians.activated().items()}
                for name, gaussians in self.sets.items()}

    def num_gaussians(self) -> int:
        return sum(len(s) for s in self.sets.values())

    def view_inputs(self, view: View) -> tuple[Tensor, Tensor]:
        """(w2c, backdrop) of a view, from the subject unless overridden."""
        w2c = self.data.w2c[view.frame] if view.w2c is None else view.w2c
        backdrop = self.data.backdrop(view.frame) if view.backdrop is None else view.backdrop
        return w2c, backdrop

    @torch.no_grad()
    def render_own(self, frame: int) -> dict:
        """Frame ``frame`` as the avatar renders it from the subject's own recording (self-reconstruction)."""
        return self.post_render(frame, self.forward(View(frame), self.conditions(frame)))
