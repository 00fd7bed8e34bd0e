"""The Avatar: a trained run loaded for inference. ``render``, ``eval``, ``RenderStream`` and the
server use only this interface, whatever the recipe.

    avatar = load_avatar(path, RECIPES)            # talksplat.recipes.load_avatar(path) does this
    cond = avatar.conditioner                      # audio windows -> per-frame conditions
    c = cond.conditions(windows, i, source_frame, "video")
    out = avatar.render(source_frame, c)           # image, alpha, head: (H, W, .) float tensors

The weights are loaded once and only read (``torch.no_grad``); everything that changes while a clip
streams (audio buffers, feature windows, frame counters) lives in the stream, so one process can
stream several sessions from one Avatar.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from talksplat.data.subject import SubjectData
from talksplat.engine.checkpoint import latest_checkpoint, load_latest_valid, newest_readable_meta
from talksplat.engine.contract import Conditioner, Conditions, Recipe, View, building_to_load_weights
from talksplat.engine.runs import check_fingerprint, resolve_run
from talksplat.engine.trainer import Engine, build_recipe, restore
from talksplat.errors import TalksplatError, UsageError


@dataclass
class RunInfo:
    subject_dir: Path
    run_dir: Path
    checkpoint: Path
    step: int
    recipe: str


class Avatar:
    def __init__(self, recipe: Recipe, run: RunInfo) -> None:
        recipe.eval()
        self.recipe = recipe
        self.run = run
        self.conditioner: Conditioner = recipe.conditioner()

    # ------------------------------------------------------------------ facts
    @property
    def name(self) -> str:
        return self.run.subject_dir.name

    @property
    def recipe_name(self) -> str:
        return self.recipe.name

    @property
    def config(self):
        return self.recipe.cfg

    @property
    def size(self) -> int:
        return int(self.recipe.cfg.size)

    @property
    def subject(self) -> SubjectData:
        """The prepared subject: source frames for poses and backdrops, ground truth for evaluation."""
        return self.recipe.data

    @property
    def subject_dir(self) -> Path:
        return self.run.subject_dir

    @property
    def checkpoint_step(self) -> int:
        return self.run.step

    def num_gaussians(self) -> int:
        return self.recipe.num_gaussians()

    @property
    def device(self) -> torch.device:
        return self.recipe.device

    def to_device(self, device: torch.device) -> Avatar:
        """Moves the weights and the subject's tensors to ``device``; the conditioner is rebuilt there
        (it holds the subject's expression tensors). Rendered images stay on ``device``."""
        self.recipe.to_device(device)
        self.conditioner = self.recipe.conditioner()
        return self

    # ------------------------------------------------------------------ rendering
    @torch.no_grad()
    def render(self, source_frame: int, conditions: Conditions | None, backdrop: torch.Tensor | None = None) -> dict:
        """One frame posed like ``source_frame`` with ``conditions`` (None = undeformed), after the
        recipe's post-render stages: ``image`` (H, W, 3), ``alpha`` (H, W, 1), ``head`` (premultiplied)."""
        out = self.recipe.forward(View(int(source_frame), backdrop=backdrop), conditions)
        return self.recipe.post_render(int(source_frame), out)

    @torch.no_grad()
    def render_own(self, frame: int) -> dict:
        """Frame ``frame`` from the subject's own audio and expressions (self-reconstruction)."""
        return self.recipe.render_own(int(frame))

    def canonical_gaussians(self) -> dict[str, dict[str, torch.Tensor]]:
        """Per Gaussian set, the undeformed Gaussians in the world (head) frame: ``means`` (N, 3),
        ``quats`` (N, 4, wxyz), ``scales`` (N, 3), ``opacities`` (N,), ``colors`` (N, C); for export."""
        return self.recipe.canonical_gaussians()


def load_avatar(path: Path, recipes: Mapping[str, type[Recipe]], recipe: str | None = None,
                run: Path | None = None) -> Avatar:
    """Loads the newest checkpoint of the run ``path`` means (see ``runs.resolve_run``) into its recipe
    (weights only: the optimizer moments stay on disk)."""
    subject_dir, run_dir = resolve_run(Path(path), recipe, run)
    meta = newest_readable_meta(run_dir / "checkpoints")
    if meta is None and latest_checkpoint(run_dir / "checkpoints") is not None:
        # Checkpoints exist but no meta.json reads: raise the damage (one line), not "no trained model".
        load_latest_valid(run_dir / "checkpoints", recipe=recipe, config_type=None, warn=lambda message: None)
    if meta is None:
        raise UsageError(f"no trained model in {run_dir}; run `talksplat train {subject_dir}` first")
    name = meta["recipe"]
    if recipe is not None and name != recipe:
        raise UsageError(f"run {run_dir} was trained with recipe {name!r}, not {recipe!r}; pass --recipe {name}")
    if name not in recipes:
        raise TalksplatError(f"run {run_dir} was trained with recipe {name!r}, which this talksplat does not have "
                             f"({', '.join(sorted(recipes))}); use the talksplat version that trained it")
    recipe_cls = recipes[name]
    ckpt, tensors, cfg, meta = load_latest_valid(run_dir / "checkpoints", recipe=name, config_type=recipe_cls.Config)
    fix = f"retrain with `talksplat train {subject_dir} --recipe {name} --restart`"
    check_fingerprint(meta.get("subject") or {}, subject_dir, fix)
    with building_to_load_weights():
        engine = Engine(build_recipe(recipe_cls, subject_dir, cfg))
    weights = {k: v for k, v in tensors.items() if "/adam/" not in k and not k.startswith("optim/")}
    restore(engine, weights, ckpt, fix)
    return Avatar(engine.recipe, RunInfo(subject_dir, run_dir, ckpt, int(meta["step"]), name))
