"""TalkingGaussian (ECCV 2024) as a composition of talksplat's shared parts.

- Persistent Gaussians in the head frame (world = head, cameras from ``prepare``), seeded from the
  fitted face template and back-projected head pixels of a training frame.
- Two branches, each a Gaussian set plus a motion field: the face branch (audio + 7 expression
  coefficients -> delta position/scale/rotation) and the inside-mouth branch (audio -> delta
  position, lighter grid). Fused as C = C_face + (1 - A_face) C_mouth (premultiplied colours, eq. 8),
  then composited over the backdrop (plate + the frame's torso and neck).
- Incremental sampling (eq. 5): in the motion stage, training frames are drawn from a window that
  slides over the frames sorted by lip opening (closed -> open), blink (open -> closed) and
  lips-part, in turn (``data.samplers.IncrementalSampler``).
- Stages: static (no deformation), motion, and a colour-only fine-tune.

Ablations of its Table 4 are config switches: ``decomposition``, ``incremental_sampling``,
``appearance_modification``. Everything else (sampling, optimizers, densification, evaluation,
checkpoints, resume) is the engine's.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from talksplat.core.labels import INSIDE_MOUTH, LIPS
from talksplat.core.landmarks import LIP_POINTS
from talksplat.core.pixels import RASTER_PIXEL_CENTRE
from talksplat.data.samplers import (
    IncrementalSamplingConfig,
    MinimumShareSampler,
    make_sampler,
    share_of,
    shut_eye_frames,
)
from talksplat.data.subject import SubjectData
from talksplat.engine.conditioning import SPEECH_CONDITIONS, AudioExpressionConditioner, SpeechCondition
from talksplat.engine.config import RecipeConfig
from talksplat.engine.contract import Batch, Conditions, Recipe, Stage, View, placeholder_points
from talksplat.engine.losses import (
    anchor_weights,
    eye_box_l1,
    label_alpha,
    landmark_motion_l1,
    motion_magnitude,
    mouth_box_dssim,
    mouth_box_l1,
    ssim,
)
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
    RegionGate,
    landmark_offsets,
    lid_rig,
    lip_rig,
    placeholder_lid_rig,
    placeholder_lip_rig,
    seed_points,
    template_anchors,
)

AUDIO_CONDITIONS = SPEECH_CONDITIONS


@dataclass
class StageIterations:
    static: int = 1500
    motion: int = 3000
    finetune: int = 500


@dataclass
class TalkingGaussianLosses:
    """Weights of the named loss terms (the engine multiplies and sums)."""

    l1: float = 0.8
    dssim: float = 0.2            # 3DGS: (1 - 0.2) L1 + 0.2 D-SSIM
    # Extra L1 over the lips' bounding box (lips + inside mouth, padded) in the deforming stages: the
    # mouth is a few hundred of the 65k pixels at 256^2 and its motion barely moves the global loss.
    # German anchor, held-out mouth-opening correlation: 0.31 at 0, 0.53 at 2, 0.45 at 5.
    mouth_box: float = 2.0
    # D-SSIM over the same box: L1 is content with a blurred average of the teeth, SSIM asks for their
    # edges. At 0.5 (Obama and Andrew prepared at 256, short schedules, one seed): interior sharpness
    # 0.46 -> 0.52 and 0.33 -> 0.52, held-out PSNR within 0.07 dB, but Obama's interior PSNR -0.64 dB
    # (docs/fidelity.md, ninth session); the default schedule sharpens as much without it. OFF.
    mouth_box_dssim: float = 0.0
    # Extra L1 over the two eye boxes (landmark boxes holding both lids) in the deforming stages, for
    # the same reason: without it the avatar never closed its eyes (Obama clip, 2600 iterations:
    # render EAR >= 0.25 on training frames whose real EAR is 0.08; docs/fidelity.md).
    eye_box: float = 2.0
    # The face layer's mean alpha over the pixels the frame labels inside-mouth, in the deforming
    # stages (the paper leaves the mouth opening to the inside-mouth layer). Without it the face layer
    # covers the real opening (alpha ~0.9 on the most open frames) with a blurred average mouth. OFF
    # by default: with no per-frame opacity the face layer answers by going transparent over the whole
    # mouth, lips included, and the inside-mouth layer (capped at max_mouth_gaussians) must draw lips
    # and teeth; at 0.5 that sharpened Andrew's teeth (held-out sharpness 0.33 -> 0.44, PSNR +0.02 dB)
    # but cost Obama 0.40 dB held-out (docs/fidelity.md).
    mouth_face_alpha: float = 0.0
    # The face layer's mean transparency (1 - alpha) over the pixels the frame labels lips, in the
    # deforming stages: the counterpart of mouth_face_alpha, so the face layer must draw the lips in
    # every frame and can leave only the opening to the inside-mouth layer - per frame, by moving its
    # lip Gaussians or (with "opacity" in face_motion.outputs) fading them. Without it the face layer
    # answered mouth_face_alpha by going transparent over the lips even in shut frames (alpha 0.1-0.14
    # on Andrew's 10 most shut training frames, 0.99 before; docs/fidelity.md). OFF by default.
    lips_face_alpha: float = 0.0
    # Mean pixel distance, as a fraction of the image side, between the tracked lip landmarks and the
    # canonical template's lip landmarks moved by the face motion field (the mean offset of the face
    # Gaussians within lip_landmark_radius_mm) and projected, each landmark's median offset over the
    # training frames removed: a geometric teacher for the lip motion (the render's mouth changes half
    # as much as the real one). OFF by default: the interior gains on training frames, not reliably
    # held out, and Obama lost 0.43 dB held out on one of two seeds (docs/fidelity.md).
    lip_landmarks: float = 0.0
    # UniGS's motion regularisation on the face field (engine.losses.motion_magnitude, in the head
    # frame's mm), in the deforming stages: an L1 that holds still the many Gaussians the conditions
    # should not move and lets a few move far (lids, lips). Hair and forehead moved 0.9-1.8 mm (std
    # over held-out frames) without it, more with the lip rig (up to 2.6 mm: held-out PSNR -0.5 dB at
    # the hair line); 0.6-0.9 mm with it (docs/fidelity.md, "a lip rig"). OFF by default: with the
    # lip rig it cost Obama blinks (2 of 5 voices out of the band prepared at 512, 1 of 15 at 256).
    motion_reg: float = 0.0


@dataclass
class TalkingGaussianConfig(RecipeConfig):
    # Runs from before the floor had none; runs from before `rare_blinks` floored every clip (runs
    # saved with it keep their own threshold, 0.03 before the eleventh session).
    # Runs from before the lip rig and the motion regularisation had neither.
    # Runs from before the audio-free eyes heard the audio code everywhere; before the lid rig had none.
    absent_in_older_checkpoints: ClassVar[dict[str, object]] = {"blink_share": 0.0, "rare_blinks": 1.0,
                                                                 "lip_rig": 0.0, "losses.motion_reg": 0.0,
                                                                 "eyes_audio_free_mm": 0.0, "lid_rig": 0.0}
    iterations: StageIterations = field(default_factory=StageIterations)
    losses: TalkingGaussianLosses = field(default_factory=TalkingGaussianLosses)
    face_points: int = 8000
    mouth_points: int = 1500
    max_face_gaussians: int = 30_000
    max_mouth_gaussians: int = 4_000
    # Position learning rate in pixels per step at the subject's depth (the camera barely moves, so
    # 3DGS's 'x scene extent' rule does not apply).
    lr_means_px: float = 0.05
    lr_motion: float = 2e-3
    lr_grid: float = 1e-2
    refine_every: int = 100
    face_motion: MotionFieldConfig = field(default_factory=MotionFieldConfig)
    mouth_motion: MotionFieldConfig = field(default_factory=lambda: MotionFieldConfig(
        grid=HashGridConfig(num_levels=8, log2_hashmap_size=12), expression_dim=0, outputs=("position",)))
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    # How audio conditions the motion fields. "lipstate": audio -> lip shape predicted by a ridge
    # map fitted on the training frames -> code (features/lipstate.py says why); training feeds the
    # tracked lip shapes (plus noise), rendering the predicted ones. "learned": the paper's
    # AudioNet on the raw features, trained end to end (memorises short clips).
    audio_condition: str = "lipstate"
    lip_state: LipStateEncoderConfig = field(default_factory=LipStateEncoderConfig)
    # Std of noise added to the tracked lip states in training. Independent per-frame noise taught
    # the temporal attention to average frames (blurring the mouth's motion); 0 did better.
    lip_state_noise: float = 0.0
    # Up-scaling of predicted lip states (features.lipstate): ridge predictions are shrunk towards
    # the mean; on the German anchor clip 2.0 raised held-out mouth-opening correlation 0.53 -> 0.57.
    lip_state_max_gain: float = 2.0
    sampling: IncrementalSamplingConfig = field(default_factory=IncrementalSamplingConfig)
    # A rare blinker - a clip with the eyes shut in fewer than `rare_blinks` of its training frames -
    # draws such frames in at least `blink_share` of the deforming steps
    # (data.samplers.MinimumShareSampler). German anchor, two blinks in 20 s (1.1% of the frames):
    # the lids closed half-way without it, to the blink counter's threshold at 0.04, and blinked on
    # every render at 0.1. Obama (4.6%) and Reagan (4.1%) get it too since the eyes no longer hear
    # the audio (eyes_audio_free_mm): Obama's lids then close deeper (EAR minimum 0.09-0.11 cross-
    # driven, 0.12-0.14 without) and he meets the blink criterion on 12 of 12 renders (10 without);
    # before the audio-free eyes the same floor cost him blinks in four of five runs. Andrew (9.2%)
    # trains draw for draw as without it (docs/fidelity.md, eleventh session).
    blink_share: float = 0.1
    rare_blinks: float = 0.05
    # losses.eye_box of a frame is weighted by (1 + eye_box_shut_gain x its blink coefficient), so
    # the few frames with the lids shut weigh more than the many open ones (a stronger eye term for
    # every frame, eye_box=4, cost Obama blinks; docs/fidelity.md). 0 = every frame alike.
    eye_box_shut_gain: float = 0.0
    # In the motion stage, keep the canonical geometry fixed so mouth changes must be explained by
    # the audio-driven deformation rather than baked into an average mouth (experiment; did not help).
    freeze_geometry_in_motion: bool = False
    # With "opacity" in face_motion.outputs (per-frame opacity offsets for the face layer): only the
    # Gaussians whose canonical centre lies within this many mm of the template's landmarks of
    # `face_opacity_regions` (parts.FACE_REGIONS) get the offset, so the face layer can fade per frame
    # there and nowhere else (everywhere, the Obama avatar stopped closing its eyes;
    # docs/fidelity.md). 0 = every face Gaussian.
    face_opacity_region_mm: float = 0.0
    face_opacity_regions: tuple[str, ...] = ("lips",)
    # The face Gaussians whose canonical centre lies within this many mm of the template's eye
    # landmarks do not see the audio code (SyncTalk++'s masked attention, at the eyes only): the lids
    # move with the expression coefficients alone. Otherwise new speech moved them: at a one-frame
    # blink Obama's lids closed to EAR 0.163 with any training frame's audio code, to 0.184 (just
    # above the blink counter's threshold) driven by a new voice, whose codes lie outside the
    # training ones. Held-out PSNR -0.03 to +0.40 dB on the three clips, both preparations
    # (docs/fidelity.md). 0 = off.
    eyes_audio_free_mm: float = 10.0
    # With losses.lip_landmarks: the face Gaussians within this many mm of a canonical lip landmark
    # carry it.
    lip_landmark_radius_mm: float = 4.0
    # How much of the lip landmarks' motion (the tracked lip state in training, the one predicted from
    # audio when rendering) moves the Gaussians near the lips before the motion fields act (0 = off,
    # 1 = all; fields.landmark_rig says why). With losses.motion_reg=1e-3: the inner lips part twice as
    # far, the interior is sharper on every run, held-out PSNR within 0.1 dB of before on eight runs
    # prepared at 256 (three clips), but prepared at 512 Obama and Andrew lost 0.18 and 0.17 dB and
    # Obama blinked on 2 of 5 voices out of the band (docs/fidelity.md), so both are OFF by default.
    # Then: the layers it moves (rigging "mouth" too speckled the teeth); the blend's width (1 mm
    # splits the Gaussians over the opening between the lips; at 2.5 mm they stayed as a curtain)
    # and its reach, in mm. Needs audio_condition=lipstate and landmarks.
    lip_rig: float = 0.0
    lip_rig_sets: tuple[str, ...] = ("face",)
    lip_rig_sigma_mm: float = 1.0
    lip_rig_reach_mm: float = 8.0
    # How much of the tracked lid landmarks' motion - fitted, per eye, as linear in that eye's blink
    # coefficient (parts.lid_rig) - moves the face Gaussians near the eyes before the motion field
    # acts (0 = off, 1 = all). Tried because the motion field alone left Obama's upper lids ~1.5 px
    # (256^2) short of the real lash line on his shut training frames (EAR 0.135 against 0.085). OFF
    # by default: it did the closing but no deeper (0.146), and moved his blink misses between voices;
    # the shut-eye floor (rare_blinks) is what deepened the lids (docs/fidelity.md, eleventh session).
    # Then the blend's width and its reach, in mm, as for the lip rig. Needs landmarks.
    lid_rig: float = 0.0
    lid_rig_sigma_mm: float = 1.0
    lid_rig_reach_mm: float = 4.0
    decomposition: bool = True
    incremental_sampling: bool = True
    appearance_modification: bool = False

    def validate(self) -> None:
        super().validate()
        it = self.iterations
        if min(it.static, it.motion, it.finetune) < 0:
            raise ValueError("stage iteration counts must be >= 0")
        if self.audio_condition not in AUDIO_CONDITIONS:
            raise ValueError(f"audio_condition must be one of {AUDIO_CONDITIONS} (got {self.audio_condition!r})")
        self.face_motion.validate("face_motion")
        self.mouth_motion.validate("mouth_motion")
        if self.face_opacity_region_mm < 0:
            raise ValueError("face_opacity_region_mm must be >= 0 (0 = every face Gaussian)")
        unknown_regions = sorted(set(self.face_opacity_regions) - set(FACE_REGIONS))
        if unknown_regions or not self.face_opacity_regions:
            raise ValueError(f"face_opacity_regions: unknown or none {unknown_regions}; use some of "
                             f"{', '.join(sorted(FACE_REGIONS))}")
        if self.eyes_audio_free_mm < 0:
            raise ValueError(f"eyes_audio_free_mm must be >= 0 (got {self.eyes_audio_free_mm}; 0 = off)")
        if self.eye_box_shut_gain < 0:
            raise ValueError(f"eye_box_shut_gain must be >= 0 (got {self.eye_box_shut_gain}; 0 = off)")
        if min(self.face_points, self.mouth_points, self.refine_every) < 1:
            raise ValueError("face_points, mouth_points and refine_every must be >= 1")
        if not 0.0 <= self.blink_share < 1.0:
            raise ValueError(f"blink_share must be in [0, 1) (got {self.blink_share}; 0 = off)")
        if self.lip_landmark_radius_mm <= 0:
            raise ValueError("lip_landmark_radius_mm must be > 0")
        if self.lid_rig < 0 or self.lid_rig_sigma_mm <= 0 or self.lid_rig_reach_mm <= 0:
            raise ValueError("lid_rig must be >= 0 (0 = off) and lid_rig_sigma_mm, lid_rig_reach_mm > 0")
        if self.lip_rig < 0 or self.lip_rig_sigma_mm <= 0 or self.lip_rig_reach_mm <= 0:
            raise ValueError("lip_rig must be >= 0 (0 = off) and lip_rig_sigma_mm, lip_rig_reach_mm > 0")
        unknown = sorted(set(self.lip_rig_sets) - {"face", "mouth"})
        if unknown:
            raise ValueError(f"lip_rig_sets: unknown {unknown}; use some of face, mouth")
        if not 0.0 < self.rare_blinks <= 1.0:
            raise ValueError(f"rare_blinks must be in (0, 1] (got {self.rare_blinks}; 1 = floor every clip)")


class TalkingGaussian(Recipe):
    """Face and inside-mouth Gaussian sets, their motion fields, and the audio encoder."""

    name = "talkinggaussian"
    paper = "TalkingGaussian: Structure-Persistent 3D Talking Head Synthesis via Gaussian Splatting (ECCV 2024)"
    Config = TalkingGaussianConfig
    required_channels = ("frames", "masks", "w2c", "expressions", "audio", "lip_shapes", "lip_open", "blink",
                         "lips_part")
    # --quality presets (dotted config names); "default" is the config's own defaults.
    presets: ClassVar[dict[str, dict[str, object]]] = {
        "draft": {"size": 128, "iterations.static": 300, "iterations.motion": 600, "iterations.finetune": 100},
        "default": {},
        "high": {"size": 512, "iterations.static": 4000, "iterations.motion": 10000, "iterations.finetune": 2000},
    }
    test_overrides: ClassVar[dict[str, object]] = {
        "size": 64, "face_points": 600, "mouth_points": 100, "refine_every": 4,
        "iterations.static": 10, "iterations.motion": 8, "iterations.finetune": 3}
    # cuda: written to follow the parameters' device, not yet run on a GPU (tests/test_device.py has
    # the checks that run where CUDA exists).
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")

    def __init__(self, data: SubjectData, cfg: TalkingGaussianConfig, rng: np.random.Generator) -> None:
        super().__init__(data, cfg, rng)
        depth = float(data.w2c[:, 2, 3].median())
        lrs = GaussianLearningRates(means=cfg.lr_means_px * depth / float(data.K[0, 0]))
        densify = DensifyConfig(refine_every=cfg.refine_every, refine_start=cfg.refine_every * 2,
                                refine_stop=cfg.iterations.static + cfg.iterations.motion // 2)
        if self.weights_from_checkpoint:
            face_pts, face_cols = mouth_pts, mouth_cols = placeholder_points()
        else:
            face_pts, face_cols, mouth_pts, mouth_cols = seed_points(data, cfg.face_points, cfg.mouth_points, rng)
        face_motion = replace(cfg.face_motion, outputs=("color", "opacity")) if cfg.appearance_modification \
            else cfg.face_motion
        self.sets["face"] = GaussianSet(face_pts, face_cols, lrs, replace(densify, max_gaussians=cfg.max_face_gaussians))
        self.face_motion = _motion_field(face_motion, face_pts)
        self.face_opacity_region = RegionGate(template_anchors(tuple(cfg.face_opacity_regions)),
                                              cfg.face_opacity_region_mm) if cfg.face_opacity_region_mm > 0 else None
        self.eyes_hear = RegionGate(template_anchors(("eyes",)), cfg.eyes_audio_free_mm) \
            if cfg.eyes_audio_free_mm > 0 else None
        self.lip_anchors = self.lip_offsets = None
        if cfg.losses.lip_landmarks > 0 and data.landmarks is not None:
            self.lip_anchors = template_anchors(("lips",))
            self.lip_offsets = landmark_offsets(data, self.lip_anchors, LIP_POINTS)
        self.mouth_motion = None
        if cfg.decomposition:
            self.sets["mouth"] = GaussianSet(mouth_pts, mouth_cols, lrs,
                                             replace(densify, max_gaussians=cfg.max_mouth_gaussians))
            self.mouth_motion = _motion_field(cfg.mouth_motion, mouth_pts)
        self.audio = SpeechCondition(data, cfg.audio_condition, cfg.lip_state, cfg.audio, cfg.lip_state_noise,
                                     cfg.lip_state_max_gain, fit=not self.weights_from_checkpoint)
        self.lip_rig = None
        # The rig reads the lip state and is fitted to the tracked landmarks: with the learned audio
        # condition or a subject without landmarks there is nothing to drive or fit it.
        if cfg.lip_rig > 0 and cfg.audio_condition == "lipstate" and data.landmarks is not None:
            self.lip_rig = placeholder_lip_rig(cfg.lip_state.lip_dims, cfg.lip_rig_sigma_mm, cfg.lip_rig_reach_mm) \
                if self.weights_from_checkpoint else \
                lip_rig(data, self.audio.lip_basis, cfg.lip_rig_sigma_mm, cfg.lip_rig_reach_mm)
        self.lid_rig = None
        if cfg.lid_rig > 0 and data.landmarks is not None:
            self.lid_rig = placeholder_lid_rig(data.expressions.shape[1], cfg.lid_rig_sigma_mm, cfg.lid_rig_reach_mm) \
                if self.weights_from_checkpoint else lid_rig(data, cfg.lid_rig_sigma_mm, cfg.lid_rig_reach_mm)

    # ---------------------------------------------------------------------------------- structure
    def stages(self) -> list[Stage]:
        it, cfg = self.cfg.iterations, self.cfg
        motion_trains = ("gaussians.colors", "gaussians.opacity_logits") if cfg.freeze_geometry_in_motion \
            else ("gaussians",)
        return [Stage("static", it.static, trains=("gaussians",), densify=True),
                Stage("motion", it.motion, trains=(*motion_trains, "networks"), densify=True, deform=True,
                      sampler="incremental" if cfg.incremental_sampling else "uniform"),
                Stage("finetune", it.finetune, trains=("gaussians.colors",), deform=True)]

    def sampler(self, stage: Stage):
        base = make_sampler(stage.sampler, self.data, self.cfg.sampling)
        shut = shut_eye_frames(self.data)
        if not stage.deform or self.cfg.blink_share <= 0 or \
                share_of(shut, self.data.train_frames) >= self.cfg.rare_blinks:
            return base
        return MinimumShareSampler(base, shut, self.data.train_frames, self.cfg.blink_share)

    def _motion_fields(self) -> dict[str, MotionField]:
        fields = {"face": self.face_motion}
        if self.mouth_motion is not None:
            fields["mouth"] = self.mouth_motion
        return fields

    def network_param_groups(self) -> list[dict]:
        cfg = self.cfg
        groups = [{"name": "audio", "params": list(self.audio.parameters()), "lr": cfg.lr_motion}]
        for name, motion in self._motion_fields().items():
            groups.append({"name": f"{name}_grid", "params": [motion.encoding.embeddings], "lr": cfg.lr_grid})
            others = [p for n, p in motion.named_parameters() if not n.startswith("encoding.")]
            groups.append({"name": f"{name}_motion", "params": others, "lr": cfg.lr_motion})
        return groups

    # ---------------------------------------------------------------------------------- conditions
    def conditions(self, frame: int) -> Conditions:
        return self.audio.conditions(frame)

    def training_conditions(self, frame: int, stage: Stage) -> Conditions:
        return self.audio.training_conditions(frame)

    def conditioner(self) -> AudioExpressionConditioner:
        return self.audio.conditioner(self.cfg.audio_feature)

    # ---------------------------------------------------------------------------------- rendering
    def _deformed(self, name: str, conditions: Conditions | None) -> dict[str, Tensor]:
        return self._deform(name, conditions)[0]

    def _deform(self, name: str, conditions: Conditions | None) -> tuple[dict[str, Tensor], Deformation | None]:
        """The layer's Gaussians under ``conditions`` and the field's offsets (None: canonical)."""
        gaussians = self.sets[name]
        if conditions is None:
            return gaussians.activated(), None
        p = gaussians.params
        expression = conditions["expression"] if name == "face" else None
        audio = conditions["audio_code"]
        if name == "face" and self.eyes_hear is not None:
            audio = self.eyes_hear(p["means"])[:, None] * audio.reshape(1, -1)   # per Gaussian: 0 at the eyes
        d = self._motion_fields()[name](p["means"], audio, expression)
        rigged = p["means"]
        if self.lip_rig is not None and name in self.cfg.lip_rig_sets:
            # the inside-mouth layer sits behind the lips: its teeth follow the lip in front of them
            rigged = rigged + self.cfg.lip_rig * self.lip_rig(p["means"], conditions["lip_state"], planar=name == "mouth")
        if self.lid_rig is not None and name == "face":
            rigged = rigged + self.cfg.lid_rig * self.lid_rig(p["means"], expression)
        opacity_offsets = d.d_opacity_logits
        if name == "face" and self.face_opacity_region is not None:
            opacity_offsets = opacity_offsets * self.face_opacity_region.inside(p["means"])
        return {"means": rigged + d.d_means, "quats": p["quats"] + d.d_quats,
                "scales": torch.exp(p["log_scales"] + d.d_log_scales),
                "opacities": torch.sigmoid(p["opacity_logits"] + opacity_offsets),
                "colors": p["colors"] + d.d_colors}, d

    def forward(self, view: View, conditions: Conditions | None, stage: Stage | None = None) -> dict:
        size, K = self.cfg.size, self.data.K
        w2c, backdrop = self.view_inputs(view)
        deformed_face, face_deformation = self._deform("face", conditions)
        face = rasterize(*deformed_face.values(), w2c, K, size, size, with_depth=False)
        image, transmittance = face.image, 1.0 - face.alpha
        metas = {"face": face.meta}
        face_alpha = face.alpha
        if "mouth" in self.sets:
            mouth = rasterize(*self._deformed("mouth", conditions).values(), w2c, K, size, size, with_depth=False)
            # front to back: one fused multiply-add per image (a 512^2 frame makes each pass count)
            image = torch.addcmul(image, transmittance, mouth.image)
            transmittance = torch.addcmul(transmittance, transmittance, mouth.alpha, value=-1.0)
            metas["mouth"] = mouth.meta
        # "head": premultiplied head colour, to composite the same render over another backdrop.
        outputs = {"image": torch.addcmul(image, transmittance, backdrop), "alpha": 1.0 - transmittance,
                   "head": image, "face_alpha": face_alpha, "metas": metas}
        if self.lip_anchors is not None and conditions is not None:
            outputs["face_means"] = deformed_face["means"]
        if self.cfg.losses.motion_reg > 0 and face_deformation is not None:
            outputs["face_deformation"] = face_deformation
        return outputs

    # ---------------------------------------------------------------------------------- training
    def losses(self, outputs: dict, batch: Batch, stage: Stage) -> dict[str, Tensor]:
        image, target = outputs["image"], batch.image
        terms = {"l1": (image - target).abs().mean(), "dssim": 1 - ssim(image, target)}
        if not stage.deform:
            return terms
        losses = self.cfg.losses
        wants_face_alpha = losses.mouth_face_alpha > 0 and "mouth" in self.sets
        wants_lips_alpha = losses.lips_face_alpha > 0 and "mouth" in self.sets
        # The frame's labels are resized per step below the prepared size: only when a term reads them.
        wants_labels = losses.mouth_box > 0 or losses.mouth_box_dssim > 0 or wants_face_alpha or wants_lips_alpha
        labels = self.data.labels(batch.frame) if wants_labels else None
        if losses.mouth_box > 0:
            terms["mouth_box"] = mouth_box_l1(image, target, labels)
        if losses.mouth_box_dssim > 0:
            terms["mouth_box_dssim"] = mouth_box_dssim(image, target, labels)
        if wants_face_alpha:
            terms["mouth_face_alpha"] = label_alpha(outputs["face_alpha"], labels, INSIDE_MOUTH)
        if wants_lips_alpha:
            terms["lips_face_alpha"] = label_alpha(1.0 - outputs["face_alpha"], labels, LIPS)
        if losses.eye_box > 0 and self.data.landmarks is not None:
            shut_weight = 1.0 + self.cfg.eye_box_shut_gain * float(self.data.blink[batch.frame])
            terms["eye_box"] = shut_weight * eye_box_l1(image, target, self.data.landmarks_px(batch.frame))
        if "face_means" in outputs:
            terms["lip_landmarks"] = self._lip_landmark_term(outputs["face_means"], batch.frame)
        if "face_deformation" in outputs:
            terms["motion_reg"] = motion_magnitude(outputs["face_deformation"])
        return terms

    def _lip_landmark_term(self, face_means: Tensor, frame: int) -> Tensor:
        canonical = self.sets["face"].params["means"]
        weights = anchor_weights(canonical, self.lip_anchors, self.cfg.lip_landmark_radius_mm)
        displacements = weights @ (face_means - canonical.detach())
        tracked = torch.as_tensor(self.data.landmarks_px(frame)[list(LIP_POINTS)] + RASTER_PIXEL_CENTRE, dtype=torch.float32)
        target = tracked.to(face_means.device) - self.lip_offsets.to(face_means.device)
        return landmark_motion_l1(displacements, self.lip_anchors.to(face_means.device), self.data.w2c[frame],
                                  self.data.K, target) / self.cfg.size

    def summary_extras(self) -> dict:
        return {"lip_state_map": self.audio.fit_summary} if self.audio.fit_summary else {}


def _motion_field(cfg: MotionFieldConfig, points: Tensor) -> MotionField:
    return MotionField(cfg, points.min(0).values, points.max(0).values)
