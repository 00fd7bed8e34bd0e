"""UniGS (one Gaussian field for head, hair and torso; UniGS Sec. 3) as a composition of shared parts.

- One Gaussian set (``portrait``) in the head frame (world = head, cameras from ``prepare``),
  initialised from random points in a cube around the subject (not seeded from the face), coloured
  by the pixel each point projects to in the first training frame.
- It renders everything but the static background plate: head, hair, neck and torso. Its backdrop is
  the plate only (``SubjectData.background``), never a frame's torso; paste-back is the renderer's.
- Stages: static (no deformation; L1 + 0.2 D-SSIM), then deformation: one MLP (3 layers) on
  tri-plane hash features (L = 12, F = 2) concatenated with the audio code, the eye features (the
  two eye-blink coefficients, standardised over the training frames) and the head pose (R, t of the
  view's camera) predicts delta position, log-scale and rotation for every Gaussian
  (``fields.motion.MotionField`` without region attention). Not in the paper: the Gaussians within
  ``pose_free_radius_mm`` (25) of the template's lips do not see the pose, so the lips move with the
  audio only.
- Losses of the deformation stage: L1 + 0.2 D-SSIM, region L1 on mouth (0.1), hair (0.05) and torso +
  neck (0.1) from the prepared label maps, motion regularisation 1e-5 * (|dmu| + |dr| + |dalpha| + |ds|),
  and a patch term (0.2). Not in the paper: TalkingGaussian's lips-box L1 (``losses.mouth_box``, 3.0),
  without which the mouth barely follows the audio, and its eye-box L1 (``losses.eye_box``, 4.0),
  without which the lids never close; both 0 restore the paper's losses. The paper's patch
  term is LPIPS; no LPIPS weights exist offline, so ``patch_perceptual`` is a SUBSTITUTE: D-SSIM plus
  image-gradient L1 on random patches (positions drawn from the recipe's generator, so a resumed run
  draws the same patches).

Ablations as config switches: the hash grid (``deformation.grid.num_levels``,
``deformation.grid.features_per_level``; the paper's Table 2) and the deformed attributes
(``deformation.outputs``, any of position, scale, rotation, opacity, color; its Table 3).

The audio condition is talksplat's lip state by default, as in the TalkingGaussian recipe (the
paper's speech-model features do not ship offline; docs/training.md says why).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from talksplat.core.labels import BACKGROUND, HAIR, INSIDE_MOUTH, LIPS, NECK, TORSO
from talksplat.data.samplers import IncrementalSamplingConfig, make_sampler
from talksplat.data.subject import SubjectData
from talksplat.engine.conditioning import SPEECH_CONDITIONS, AudioExpressionConditioner, SpeechCondition
from talksplat.engine.config import RecipeConfig
from talksplat.engine.contract import Batch, Conditions, Recipe, Stage, View, placeholder_points
from talksplat.engine.losses import eye_box_l1, motion_magnitude, mouth_box_l1, ssim, structure_loss
from talksplat.features.expression import CORE_NAMES
from talksplat.fields.hashgrid import HashGridConfig
from talksplat.fields.motion import (
    AudioEncoderConfig,
    Deformation,
    LipStateEncoderConfig,
    MotionField,
    MotionFieldConfig,
)
from talksplat.gaussians import rasterize
from talksplat.gaussians.gaussian_set import DensifyConfig, GaussianSet
from talksplat.gaussians.model import GaussianLearningRates
from talksplat.recipes.parts import (
    FACE_REGIONS,
    POSE_DIM,
    RegionGate,
    pose_statistics,
    pose_vector,
    template_anchors,
)

AUDIO_CONDITIONS = SPEECH_CONDITIONS
SET_NAME = "portrait"
# Eye features fed to the deformation: the eye-blink coefficients of the expression condition.
EYE_FEATURES = ("eyeBlinkLeft", "eyeBlinkRight")
EYE_COLUMNS = tuple(CORE_NAMES.index(name) for name in EYE_FEATURES)
# Floor of the eye features' standard deviation: a clip whose speaker never blinks must not divide by 0.
EYE_STD_FLOOR = 1e-3
# Region L1 terms: label values of each region (core.labels). "torso" covers torso and neck: both
# are what TalkingGaussian copies from the frame and UniGS renders.
REGIONS = {"mouth": (LIPS, INSIDE_MOUTH), "hair": (HAIR,), "torso": (TORSO, NECK)}


@dataclass
class StageIterations:
    static: int = 1500
    deform: int = 3000


@dataclass
class UniGSLosses:
    """Weights of the named loss terms (the engine multiplies and sums). Paper values."""

    l1: float = 1.0
    dssim: float = 0.2
    mouth: float = 0.1
    hair: float = 0.05
    torso: float = 0.1             # torso + neck labels
    motion_reg: float = 1e-5       # * (|d mean| + |d rotation| + |d opacity| + |d scale|), means over Gaussians
    # SUBSTITUTE for the paper's LPIPS on patches (no LPIPS weights offline): D-SSIM + gradient L1.
    patch_perceptual: float = 0.2
    # NOT IN THE PAPER (0 = the paper): TalkingGaussian's extra L1 over the padded lips box
    # (engine.losses.mouth_box_l1), deform stage only. With the paper's terms alone the mouth is a few
    # hundred of 65k pixels and the audio barely moves it (Obama, 300/600 iterations: lip-opening
    # amplitude of the deformation 0.21 mm vs 0.60 mm with the box; A/V confidence on unseen speech
    # 0.011 / 0.033 over two seeds, no distinct peak, vs 0.276 / 0.195 at 2.0; docs/unigs.md). 3.0 with
    # the pose-free lips: A/V confidence vs TalkingGaussian's 0.93x -> 1.06x (Kristi Noem) and
    # 0.97x -> 1.00x (Obama) over two seeds x three voices, held-out PSNR within 0.1 dB of 2.0 on
    # average (docs/unigs.md, "Lip sync: pose-free lips").
    mouth_box: float = 3.0
    # NOT IN THE PAPER (0 = the paper): the shared L1 over the two eye boxes (engine.losses.eye_box_l1),
    # deform stage only, as TalkingGaussian's. The eye features condition the deformation, but with the
    # paper's terms alone nothing rewards closing the lids. Kristi Noem, default schedules, blinks per
    # minute on unseen speech (real 23.3): 0 without it, 0 at 2.0 (lids half-way), 11-22 at 4.0 with
    # standardised eyes (two seeds), held-out PSNR 30.65 vs 30.25 dB (docs/unigs.md, "Eyes").
    eye_box: float = 4.0


@dataclass
class PatchLossConfig:
    """Random patches of the patch term (their centres lie on the portrait, not the plate)."""

    patches: int = 4
    size_fraction: float = 0.125   # patch side / image side (32 px at 256^2)
    min_size: int = 16             # the 11-px SSIM window needs room


def _default_deformation() -> MotionFieldConfig:
    # L = 12, F = 2 as in the paper; conditions concatenated (no region attention): audio code (32),
    # eye features (2), head pose (12).
    return MotionFieldConfig(grid=HashGridConfig(num_levels=12, features_per_level=2, log2_hashmap_size=14),
                             audio_dim=32, expression_dim=len(EYE_FEATURES), extra_dim=POSE_DIM,
                             region_attention=False, hidden=64, layers=3,
                             outputs=("position", "scale", "rotation"))


@dataclass
class UniGSConfig(RecipeConfig):
    iterations: StageIterations = field(default_factory=StageIterations)
    losses: UniGSLosses = field(default_factory=UniGSLosses)
    init_points: int = 10_000
    # Side of the initial cube as a fraction of the crop's width at the subject's depth.
    cube_scale: float = 1.0
    # Initial Gaussian size as a fraction of the spacing of the random points: at the full spacing
    # the points nearest the camera cover > 15% of the image, and densification prunes them at once.
    init_scale: float = 0.5
    max_gaussians: int = 40_000
    # Position learning rate in pixels per step at the subject's depth (as TalkingGaussian's).
    lr_means_px: float = 0.05
    lr_motion: float = 2e-3
    lr_grid: float = 1e-2
    refine_every: int = 100
    deformation: MotionFieldConfig = field(default_factory=_default_deformation)
    # "lipstate": audio -> lip shape predicted by a ridge map fitted on the training frames -> code
    # (features/lipstate.py); "learned": AudioNet on the raw features, trained end to end.
    audio_condition: str = "lipstate"
    lip_state: LipStateEncoderConfig = field(default_factory=LipStateEncoderConfig)
    lip_state_noise: float = 0.0
    lip_state_max_gain: float = 2.0
    # NOT IN THE PAPER (0 = the paper): std of noise added to the standardised head-pose condition in
    # training only, so the field cannot explain lip or lid motion by the head pose that went with it
    # in the clip. Measured on Kristi Noem (docs/unigs.md, "Eyes"): with eye_box 2 it let the lids
    # close (0 -> 4-7 blinks/min); with eye_box 4, 1.0 cost 0.5 dB held out for no clear gain. Off.
    pose_noise: float = 0.0
    # NOT IN THE PAPER (false = the paper's raw coefficients): standardise the eye features (blink
    # coefficients) over the training frames, as the pose is. Raw, they sit near 0 with rare 1s and
    # the lids' pathway learns slowly: Kristi Noem with eye_box 4 blinked with seed 0 and never with
    # seed 1; standardised, both seeds blink, held-out PSNR unchanged (docs/unigs.md, "Eyes").
    standardise_eyes: bool = True
    # NOT IN THE PAPER (0 = the paper): Gaussians whose canonical centre lies within this many mm of
    # the template's landmarks of ``pose_free_regions`` do not see the head-pose condition (their
    # share of it is gated to 0). The pose is a near-unique code of each training frame, so without
    # this the field explains part of the lip motion by the pose that went with it in the clip, and a
    # render driven by unseen speech, posed by looped source frames, replays that motion out of sync.
    # Default schedules, two seeds x three unseen voices, mouth_box 2 (docs/unigs.md, "Lip sync:
    # pose-free lips"): A/V confidence vs TalkingGaussian's 0.88x -> 0.93x (Kristi Noem), 0.85x ->
    # 0.97x (Obama); held-out PSNR -0.33 dB full crop, -0.17 dB head box (means of four seed pairs).
    pose_free_radius_mm: float = 25.0
    pose_free_regions: tuple[str, ...] = ("lips",)
    # NOT IN THE PAPER (false = the paper's uniform sampling): TalkingGaussian's incremental sampling
    # (frames sorted by lip opening, blink and lips apart, a window sliding from small to large
    # motion) in the deform stage. Measured with the pose-free lips: level with TalkingGaussian's
    # sync on Kristi Noem, worse on Obama (0.90x; -0.5 dB and one seed of two nearly stopped blinking). Off.
    incremental_sampling: bool = False
    sampling: IncrementalSamplingConfig = field(default_factory=IncrementalSamplingConfig)
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    patch: PatchLossConfig = field(default_factory=PatchLossConfig)
    # Runs written before the pose-free lips existed were trained with every Gaussian seeing the pose.
    absent_in_older_checkpoints: ClassVar[dict[str, object]] = {"pose_free_radius_mm": 0.0}

    def validate(self) -> None:
        super().validate()
        if min(self.iterations.static, self.iterations.deform) < 0:
            raise ValueError("stage iteration counts must be >= 0")
        if self.audio_condition not in AUDIO_CONDITIONS:
            raise ValueError(f"audio_condition must be one of {AUDIO_CONDITIONS} (got {self.audio_condition!r})")
        if self.pose_noise < 0:
            raise ValueError("pose_noise must be >= 0")
        if self.pose_free_radius_mm < 0:
            raise ValueError("pose_free_radius_mm must be >= 0 (0 = every Gaussian sees the pose)")
        unknown = sorted(set(self.pose_free_regions) - set(FACE_REGIONS))
        if unknown or not self.pose_free_regions:
            raise ValueError(f"pose_free_regions must be some of {', '.join(FACE_REGIONS)} "
                             f"(got {list(self.pose_free_regions)})")
        if min(self.init_points, self.refine_every, self.max_gaussians) < 1 or min(self.cube_scale,
                                                                                    self.init_scale) <= 0:
            raise ValueError("init_points, refine_every, max_gaussians, cube_scale and init_scale must be positive")
        self._validate_deformation()
        if self.patch.patches < 1 or not 0 < self.patch.size_fraction <= 1 or self.patch.min_size < 1:
            raise ValueError("patch.patches and patch.min_size must be >= 1, patch.size_fraction in (0, 1]")

    def _validate_deformation(self) -> None:
        d = self.deformation
        d.validate("deformation")
        code_dim = self.lip_state.out_dim if self.audio_condition == "lipstate" else self.audio.out_dim
        fed = {"audio_dim": code_dim, "expression_dim": len(EYE_FEATURES), "extra_dim": POSE_DIM}
        for name, size in fed.items():
            if getattr(d, name) != size:
                raise ValueError(f"deformation.{name} must be {size}, the size of what UniGS feeds it "
                                 f"(got {getattr(d, name)})")


class UniGS(Recipe):
    """One Gaussian set for the whole portrait, one deformation field, the audio encoder."""

    name = "unigs"
    paper = "UniGS: unified head, hair and torso Gaussian field for talking portraits (Sec. 3)"
    Config = UniGSConfig
    required_channels = ("frames", "masks", "w2c", "expressions", "audio", "lip_shapes")
    presets: ClassVar[dict[str, dict[str, object]]] = {
        "draft": {"size": 128, "iterations.static": 300, "iterations.deform": 700},
        "default": {},
        "high": {"size": 512, "iterations.static": 4000, "iterations.deform": 12000, "max_gaussians": 100_000},
    }
    test_overrides: ClassVar[dict[str, object]] = {
        "size": 64, "init_points": 2000, "refine_every": 4, "iterations.static": 10, "iterations.deform": 8}

    def __init__(self, data: SubjectData, cfg: UniGSConfig, rng: np.random.Generator) -> None:
        super().__init__(data, cfg, rng)
        depth = float(data.w2c[:, 2, 3].median())
        lrs = GaussianLearningRates(means=cfg.lr_means_px * depth / float(data.K[0, 0]))
        densify = DensifyConfig(max_gaussians=cfg.max_gaussians, refine_every=cfg.refine_every,
                                refine_start=cfg.refine_every * 2,
                                refine_stop=cfg.iterations.static + cfg.iterations.deform // 2)
        points, colors = placeholder_points() if self.weights_from_checkpoint else \
            cube_points(data, cfg.init_points, cfg.cube_scale, rng)
        self.sets[SET_NAME] = GaussianSet(points, colors, lrs, densify)
        with torch.no_grad():   # before any optimizer step: Adam has no state to keep in step
            self.sets[SET_NAME].params["log_scales"].add_(math.log(cfg.init_scale))
        self.deformation = MotionField(cfg.deformation, points.min(0).values, points.max(0).values)
        mean, std = pose_statistics(data.w2c[torch.as_tensor(data.train_frames)])
        self.register_buffer("pose_mean", mean)
        self.register_buffer("pose_std", std)
        if cfg.standardise_eyes:   # buffers: saved with the checkpoint, as the pose statistics
            eyes = data.expressions[torch.as_tensor(data.train_frames)][:, list(EYE_COLUMNS)]
            self.register_buffer("eye_mean", eyes.mean(0))
            self.register_buffer("eye_std", eyes.std(0).clamp_min(EYE_STD_FLOOR))
        self.pose_free = RegionGate(template_anchors(cfg.pose_free_regions), cfg.pose_free_radius_mm) \
            if cfg.pose_free_radius_mm > 0 else None
        self.audio = SpeechCondition(data, cfg.audio_condition, cfg.lip_state, cfg.audio, cfg.lip_state_noise,
                                     cfg.lip_state_max_gain, fit=not self.weights_from_checkpoint)

    # ---------------------------------------------------------------------------------- structure
    def stages(self) -> list[Stage]:
        it = self.cfg.iterations
        return [Stage("static", it.static, trains=("gaussians",), densify=True),
                Stage("deform", it.deform, trains=("gaussians", "networks"), densify=True, deform=True,
                      sampler="incremental" if self.cfg.incremental_sampling else "uniform")]

    def sampler(self, stage: Stage):
        return make_sampler(stage.sampler, self.data, self.cfg.sampling)

    def network_param_groups(self) -> list[dict]:
        cfg = self.cfg
        others = [p for n, p in self.deformation.named_parameters() if not n.startswith("encoding.")]
        return [{"name": "audio", "params": list(self.audio.parameters()), "lr": cfg.lr_motion},
                {"name": "deformation_grid", "params": [self.deformation.encoding.embeddings], "lr": cfg.lr_grid},
                {"name": "deformation", "params": others, "lr": cfg.lr_motion}]

    # ---------------------------------------------------------------------------------- conditions
    def conditions(self, frame: int) -> Conditions:
        """The avatar's own conditions for frame t: the audio code and the expression (the eye features
        are read from it; the head pose comes from the view's camera)."""
        return self.audio.conditions(frame)

    def training_conditions(self, frame: int, stage: Stage) -> Conditions:
        conditions = self.audio.training_conditions(frame)
        if self.cfg.pose_noise > 0:   # drawn from the recipe's generator: a resumed run draws the same
            noise = self.rng.normal(0.0, self.cfg.pose_noise, POSE_DIM)
            conditions = {**conditions, "pose_noise": torch.as_tensor(noise, dtype=torch.float32)}
        return conditions

    def conditioner(self) -> AudioExpressionConditioner:
        return self.audio.conditioner(self.cfg.audio_feature)

    def eye_condition(self, expression: Tensor) -> Tensor:
        """The eye features: the eye-blink coefficients, standardised over the training frames unless
        ``standardise_eyes`` is off (the paper's raw coefficients)."""
        eyes = expression[list(EYE_COLUMNS)]
        return (eyes - self.eye_mean) / self.eye_std if self.cfg.standardise_eyes else eyes

    def pose_condition(self, w2c: Tensor) -> Tensor:
        """The head pose (R, t of the camera in the head frame), standardised over the training frames."""
        return (pose_vector(w2c) - self.pose_mean) / self.pose_std

    def pose_gate(self, means: Tensor) -> Tensor | None:
        """[N] 0 for the Gaussians of the pose-free face regions, 1 elsewhere; None when every
        Gaussian sees the pose (``pose_free_radius_mm`` 0)."""
        return None if self.pose_free is None else self.pose_free(means)

    # ---------------------------------------------------------------------------------- rendering
    def _deformed(self, conditions: Conditions | None, w2c: Tensor) -> tuple[dict[str, Tensor], Deformation | None]:
        gaussians = self.sets[SET_NAME]
        if conditions is None:
            return gaussians.activated(), None
        p = gaussians.params
        eyes = self.eye_condition(conditions["expression"])
        pose = self.pose_condition(w2c)
        if "pose_noise" in conditions:
            pose = pose + conditions["pose_noise"].to(pose.device)
        d = self.deformation(p["means"], conditions["audio_code"], eyes, pose, self.pose_gate(p["means"]))
        return {"means": p["means"] + d.d_means, "quats": p["quats"] + d.d_quats,
                "scales": torch.exp(p["log_scales"] + d.d_log_scales),
                "opacities": torch.sigmoid(p["opacity_logits"] + d.d_opacity_logits),
                "colors": p["colors"] + d.d_colors}, d

    def forward(self, view: View, conditions: Conditions | None, stage: Stage | None = None) -> dict:
        size, K = self.cfg.size, self.data.K
        w2c = self.data.w2c[view.frame] if view.w2c is None else view.w2c
        # The plate only: torso and neck are rendered, never copied from a frame (a caller may still
        # pass another backdrop explicitly).
        backdrop = self.data.background if view.backdrop is None else view.backdrop
        gaussians, deformation = self._deformed(conditions, w2c)
        out = rasterize(*gaussians.values(), w2c, K, size, size, with_depth=False)
        return {"image": out.image + (1.0 - out.alpha) * backdrop, "alpha": out.alpha, "head": out.image,
                "metas": {SET_NAME: out.meta}, "deformation": deformation}

    # ---------------------------------------------------------------------------------- training
    def losses(self, outputs: dict, batch: Batch, stage: Stage) -> dict[str, Tensor]:
        image, target = outputs["image"], batch.image
        terms = {"l1": (image - target).abs().mean(), "dssim": 1 - ssim(image, target)}
        if not stage.deform:
            return terms     # the static stage: L1 + 0.2 D-SSIM
        weights = self.cfg.losses
        labels = self.data.labels(batch.frame)
        for name, values in REGIONS.items():
            if getattr(weights, name) > 0:
                terms[name] = region_l1(image, target, torch.isin(labels, torch.tensor(values)))
        if weights.mouth_box > 0:
            terms["mouth_box"] = mouth_box_l1(image, target, labels)
        if weights.eye_box > 0 and self.data.landmarks is not None:
            terms["eye_box"] = eye_box_l1(image, target, self.data.landmarks_px(batch.frame))
        if weights.motion_reg > 0 and outputs["deformation"] is not None:
            terms["motion_reg"] = motion_magnitude(outputs["deformation"])
        if weights.patch_perceptual > 0:
            terms["patch_perceptual"] = self._patch_loss(image, target, labels)
        return terms

    def _patch_loss(self, image: Tensor, target: Tensor, labels: Tensor) -> Tensor:
        """Mean patch structure loss over random patches centred on the portrait (the substitute)."""
        corners = patch_corners(labels, self.cfg.patch, self.rng)
        side = patch_side(labels.shape[0], self.cfg.patch)
        # Patches side by side along the channels: one SSIM call (mean over equal-sized patches =
        # the mean of their SSIMs), far fewer small convolutions on the CPU.
        patches = torch.cat([image[y:y + side, x:x + side] for y, x in corners], dim=-1)
        targets = torch.cat([target[y:y + side, x:x + side] for y, x in corners], dim=-1)
        return structure_loss(patches, targets)

    def summary_extras(self) -> dict:
        extras = {"patch_perceptual": "substitute for LPIPS: D-SSIM + image-gradient L1 on random patches"}
        if self.audio.fit_summary:
            extras["lip_state_map"] = self.audio.fit_summary
        return extras


# ------------------------------------------------------------------------------------ losses
def region_l1(image: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean |image - target| over the pixels of ``mask`` (H, W) only; 0 when the region is empty."""
    pixels = mask.sum()
    if int(pixels) == 0:
        return image.new_zeros(())
    diff = (image - target).abs() * mask[..., None]
    return diff.sum() / (pixels * image.shape[-1])


def patch_side(size: int, cfg: PatchLossConfig) -> int:
    return min(size, max(cfg.min_size, round(size * cfg.size_fraction)))


def patch_corners(labels: Tensor, cfg: PatchLossConfig, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Top-left corners of ``cfg.patches`` patches whose centres are random portrait pixels (any
    pixel when the frame has none), drawn from ``rng``."""
    size = labels.shape[0]
    side = patch_side(size, cfg)
    ys, xs = np.nonzero(labels.numpy() != BACKGROUND)
    if len(ys) == 0:
        ys, xs = np.divmod(np.arange(size * size), size)
    picks = rng.integers(0, len(ys), size=cfg.patches)
    return [(_corner(ys[i], side, size), _corner(xs[i], side, size)) for i in picks]


def _corner(centre: int, side: int, size: int) -> int:
    """The first row (or column) of a ``side``-pixel window centred near ``centre``, inside the image."""
    return int(min(max(int(centre) - side // 2, 0), size - side))


# ------------------------------------------------------------------------------------ initialisation
def init_cube(data: SubjectData, scale: float) -> tuple[Tensor, float, int]:
    """(centre in the camera frame of the first training frame, side, that frame): a cube around the
    subject whose side is ``scale`` x the crop's width at the head's depth, centred on the crop's
    centre ray at that depth."""
    t = int(data.train_frames[0])
    depth = float(data.w2c[t, 2, 3])
    K, size = data.K, data.size
    side = scale * size * depth / float(K[0, 0])
    centre = torch.tensor([(size / 2 - float(K[0, 2])) / float(K[0, 0]) * depth,
                           (size / 2 - float(K[1, 2])) / float(K[1, 1]) * depth, depth])
    return centre, side, t


def cube_points(data: SubjectData, n: int, scale: float, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """``n`` points uniform in :func:`init_cube` (world = head frame) and the colour of the pixel each
    projects to in the cube's frame (points outside the image take the nearest border pixel)."""
    centre, side, t = init_cube(data, scale)
    cam = centre + torch.from_numpy(rng.uniform(-0.5, 0.5, (n, 3))).float() * side
    w2c = data.w2c[t]
    world = (cam - w2c[:3, 3]) @ w2c[:3, :3]           # x_world = R^T (x_cam - t)
    K, size = data.K, data.size
    u = (cam[:, 0] / cam[:, 2] * K[0, 0] + K[0, 2] - 0.5).round().long().clamp(0, size - 1)
    v = (cam[:, 1] / cam[:, 2] * K[1, 1] + K[1, 2] - 0.5).round().long().clamp(0, size - 1)
    colors = data.image(t)[v, u]
    return world.float(), colors.float()
