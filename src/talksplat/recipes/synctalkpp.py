"""SyncTalk++ (Gaussian-splatting talking head with a sync encoder, an expression generator and a
torso restorer) as a composition of talksplat's shared parts, small enough for a CPU.

- Face-Sync Controller: audio -> the audio branch of the audio-visual sync encoder
  (``fields.sync_audio``; trained by default on the subject's own training frames, deterministic
  and cached; ``sync.model_dir`` uses one trained on other speakers with ``talksplat sync-train``)
  -> a code with temporal attention. Facial Animation Capturer: the head model's blendshapes
  reduced to the 7 core coefficients (``face_model/core7``). Facial-aware masked attention: the
  nose tip's height splits the canonical Gaussians into a lip region (below) and an expression
  region (above); the region attention vectors of the motion field are masked,
  V_lip = V (.) M_lip, V_exp = V (.) M_exp, so the audio moves only the lower face and the
  expression only the upper face (``masked_attention = false`` lets both act everywhere).
- Dynamic Portrait Renderer: one Gaussian set seeded from the face template, spherical-harmonic
  colour (``gaussians.sh``, degree ``sh_degree``, view-dependent), and a tri-plane hash grid + MLP
  (``fields.motion.MotionField``) mapping (position features, f_l, f_e, head pose R|T) to
  delta position, scale, rotation, opacity and the SH DC term (colour). The canonical attributes
  are the Gaussians' own parameters (not predicted by the tri-plane; see docs/synctalkpp.md).
- OOD Audio Expression Generator (``features.expression_generator``): a VQ-VAE codebook of the
  subject's own coefficient snippets and a small transformer from audio to codes, trained in its
  own stage; ``render --expression generated`` drives blinks, brows and expression from the audio.
- OOD Audio Torso Restorer (``fields.inpainting``): a small U-Net trained in its own stage to
  inpaint the subject's frames around a randomly expanded (10-30 px at 512^2), randomly rotated
  head mask; ``post_render`` restores the source backdrop around the head (15 px at 512^2) before
  the rendered head is composited, filling the gap between the new head and the source torso.

Losses: L1 + 0.2 D-SSIM and the mouth-box L1 (engine.losses) for the Gaussians; VQ reconstruction,
codebook, beta-commitment and code cross-entropy for the generator; L1 + a perceptual SUBSTITUTE
(D-SSIM + image-gradient L1; no LPIPS weights offline) for the restorer.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from talksplat.core.labels import HEAD_LABELS
from talksplat.core.landmarks import CHIN, NOSE_TIP
from talksplat.data.subject import SubjectData
from talksplat.engine.conditioning import window_extent
from talksplat.engine.config import RecipeConfig
from talksplat.engine.contract import Batch, Conditioner, Conditions, Recipe, Stage, View, placeholder_points
from talksplat.engine.losses import eye_box_l1, mouth_box_l1, ssim, structure_loss
from talksplat.errors import UsageError
from talksplat.features.expression import CORE_NAMES
from talksplat.features.expression_generator import (
    ExpressionGenerator,
    ExpressionGeneratorConfig,
    Memo,
    window_seed,
)
from talksplat.fields.hashgrid import HashGridConfig
from talksplat.fields.inpainting import (
    InpaintingUNet,
    RestorerConfig,
    dilate,
    margin_pixels,
    training_example,
)
from talksplat.fields.motion import (
    AudioEncoder,
    AudioEncoderConfig,
    MotionField,
    MotionFieldConfig,
    temporal_window,
)
from talksplat.fields.sync_audio import (
    SyncAudioConfig,
    SyncAudioEncoder,
    folder_sync_encoder,
    subject_sync_encoder,
)
from talksplat.gaussians import rasterize
from talksplat.gaussians.gaussian_set import DensifyConfig, GaussianSet
from talksplat.gaussians.model import GaussianLearningRates
from talksplat.gaussians.sh import eval_sh, num_sh_coefficients, rgb_to_sh_dc, view_directions
from talksplat.recipes.parts import POSE_DIM, pose_statistics, pose_vector, seed_points

SET_NAME = "face"
AUDIO_CONDITIONS = ("sync", "mel")
EXPRESSION_CHANNEL = "face_model/core7"
BLINK_COLUMNS = (CORE_NAMES.index("eyeBlinkLeft"), CORE_NAMES.index("eyeBlinkRight"))
# Stages that train networks on their own inputs: the engine still calls forward, which then
# skips rasterizing (nothing it draws would be used).
NON_RENDERING_STAGES = ("generator", "restorer")


@dataclass
class StageIterations:
    static: int = 1500
    deform: int = 3000
    generator: int = 800
    restorer: int = 400


@dataclass
class SyncTalkPPLosses:
    """Weights of the named loss terms (the engine multiplies and sums)."""

    l1: float = 0.8
    dssim: float = 0.2
    mouth_box: float = 2.0               # extra L1 on the lips' box in the deform stage (as TalkingGaussian)
    # extra L1 on the eyes' landmark boxes in the deform stage (shared with TalkingGaussian, docs/fidelity.md):
    # without it the expression coefficients never learned to close the eyes
    eye_box: float = 2.0
    vq_reconstruction: float = 1.0
    vq_codebook: float = 1.0
    vq_commitment: float = 0.25          # beta (van den Oord et al.)
    code_prediction: float = 0.2         # audio -> code cross-entropy
    restore_l1: float = 1.0
    # SUBSTITUTE for a perceptual (VGG/LPIPS) loss, whose weights are not available offline:
    # D-SSIM + image-gradient L1 over the hole's box.
    restore_perceptual: float = 0.2


def _default_deformation() -> MotionFieldConfig:
    return MotionFieldConfig(grid=HashGridConfig(log2_hashmap_size=14), audio_dim=32,
                             expression_dim=len(CORE_NAMES), extra_dim=POSE_DIM, region_attention=True,
                             outputs=("position", "scale", "rotation", "opacity", "color"))


@dataclass
class SyncTalkPPConfig(RecipeConfig):
    iterations: StageIterations = field(default_factory=StageIterations)
    losses: SyncTalkPPLosses = field(default_factory=SyncTalkPPLosses)
    face_points: int = 8000
    mouth_points: int = 1500
    max_gaussians: int = 30_000
    sh_degree: int = 2
    lr_means_px: float = 0.05
    lr_motion: float = 2e-3
    lr_grid: float = 1e-2
    lr_generator: float = 2e-3
    lr_restorer: float = 2e-3
    refine_every: int = 100
    deformation: MotionFieldConfig = field(default_factory=_default_deformation)
    # "sync": the sync encoder's audio branch (the paper); "mel": a learned encoder on the raw
    # log-mel windows (the ablation).
    audio_condition: str = "sync"
    sync: SyncAudioConfig = field(default_factory=SyncAudioConfig)
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    masked_attention: bool = True
    expression_generator: bool = True
    generator: ExpressionGeneratorConfig = field(default_factory=ExpressionGeneratorConfig)
    # Off by default: after the budget a CPU affords (200 steps) it cost 7.7 dB held-out PSNR and
    # ~180 ms a frame for a seam change < 0.01 (docs/synctalkpp.md); true trains it as the paper does.
    torso_restorer: bool = False
    restorer: RestorerConfig = field(default_factory=RestorerConfig)

    def validate(self) -> None:
        super().validate()
        if min(vars(self.iterations).values()) < 0:
            raise ValueError("stage iteration counts must be >= 0")
        if self.audio_feature != "mel":
            raise ValueError("audio_feature must be mel: the sync encoder (and the mel ablation) read log-mel "
                             "windows; choose the encoder with audio_condition")
        if self.audio_condition not in AUDIO_CONDITIONS:
            raise ValueError(f"audio_condition must be one of {AUDIO_CONDITIONS} (got {self.audio_condition!r})")
        num_sh_coefficients(self.sh_degree)
        if min(self.face_points, self.mouth_points, self.refine_every, self.max_gaussians, self.sync.train_steps) < 1:
            raise ValueError("face_points, mouth_points, refine_every, max_gaussians and sync.train_steps must be >= 1")
        d = self.deformation
        d.validate("deformation")
        code_dim = self.sync.out_dim if self.audio_condition == "sync" else self.audio.out_dim
        for name, size in {"audio_dim": code_dim, "expression_dim": len(CORE_NAMES), "extra_dim": POSE_DIM}.items():
            if getattr(d, name) != size:
                raise ValueError(f"deformation.{name} must be {size}, the size of what SyncTalk++ feeds it")
        if not d.region_attention:
            raise ValueError("deformation.region_attention must be true (the masked attention masks it); "
                             "set masked_attention=false for the unmasked ablation")
        g = self.generator
        if min(g.chunk, g.codebook, g.latent, g.hidden, g.heads, g.layers, g.batch) < 1 or g.context < 0:
            raise ValueError("generator sizes must be >= 1 (context >= 0)")
        if g.hidden % g.heads:
            raise ValueError("generator.hidden must be a multiple of generator.heads")
        low, high = self.restorer.train_margin_px
        if not 0 <= low <= high or self.restorer.render_margin_px < 0 or self.restorer.levels < 1:
            raise ValueError("restorer margins must satisfy 0 <= low <= high, render margin >= 0, levels >= 1")


class SyncTalkPP(Recipe):
    """One SH-coloured Gaussian set, a masked-attention motion field, the sync audio encoder, the
    expression generator and the torso restorer."""

    name = "synctalkpp"
    paper = "SyncTalk++: High-Synchronization and Controllable Talking Head Synthesis (Gaussian splatting)"
    Config = SyncTalkPPConfig
    required_channels = ("frames", "masks", "w2c", "audio", EXPRESSION_CHANNEL)
    presets: ClassVar[dict[str, dict[str, object]]] = {
        "draft": {"size": 128, "iterations.static": 300, "iterations.deform": 600, "iterations.generator": 300,
                  "iterations.restorer": 150, "sync.train_steps": 200},
        "default": {},
        "high": {"size": 512, "iterations.static": 4000, "iterations.deform": 10000, "iterations.generator": 2000,
                 "iterations.restorer": 2000, "sh_degree": 3, "sync.train_steps": 3000},
    }
    test_overrides: ClassVar[dict[str, object]] = {
        "size": 64, "face_points": 600, "mouth_points": 100, "refine_every": 4, "sync.train_steps": 20,
        "torso_restorer": True,
        "generator.batch": 8, "restorer.channels": 4, "restorer.levels": 2,
        "iterations.static": 10, "iterations.deform": 8, "iterations.generator": 4, "iterations.restorer": 3}

    def __init__(self, data: SubjectData, cfg: SyncTalkPPConfig, rng: np.random.Generator) -> None:
        super().__init__(data, cfg, rng)
        self.sh_coefficients = num_sh_coefficients(cfg.sh_degree)
        self._build_gaussians(data, cfg, rng)
        self.deformation = MotionField(cfg.deformation, self._seed_box[0], self._seed_box[1])
        mean, std = pose_statistics(data.w2c[torch.as_tensor(data.train_frames)])
        self.register_buffer("pose_mean", mean)
        self.register_buffer("pose_std", std)
        self._register_nose_split()
        self.sync_info: dict = {}
        self.audio = self._build_audio_encoder(data, cfg)
        self.expressions = torch.as_tensor(np.asarray(data.channel(EXPRESSION_CHANNEL)), dtype=torch.float32)
        self.neutral = self.expressions[torch.as_tensor(data.train_frames)].median(0).values
        self._frame_audio = self.frame_audio_features(data.audio)       # (T, A) for the generator
        self.generator = ExpressionGenerator(cfg.generator, len(CORE_NAMES), self._frame_audio.shape[1], BLINK_COLUMNS)
        # Blink timing from prepare's eye-aspect-ratio blink signal; amplitude in core7 units.
        self.generator_info = self.generator.fit_statistics(self.expressions, self._frame_audio, data.train_frames,
                                                            blink_signal=data.blink)
        self.restorer = InpaintingUNet(cfg.restorer)
        # Steps the restorer has trained: post_render leaves renders alone until it has.
        self.register_buffer("restorer_steps", torch.zeros((), dtype=torch.int64))

    # ---------------------------------------------------------------------------------- building
    def _build_gaussians(self, data: SubjectData, cfg: SyncTalkPPConfig, rng: np.random.Generator) -> None:
        depth = float(data.w2c[:, 2, 3].median())
        lrs = GaussianLearningRates(means=cfg.lr_means_px * depth / float(data.K[0, 0]))
        densify = DensifyConfig(max_gaussians=cfg.max_gaussians, refine_every=cfg.refine_every,
                                refine_start=cfg.refine_every * 2,
                                refine_stop=cfg.iterations.static + cfg.iterations.deform // 2)
        if self.weights_from_checkpoint:
            points, colours = placeholder_points()
        else:
            face_pts, face_cols, mouth_pts, mouth_cols = seed_points(data, cfg.face_points, cfg.mouth_points, rng)
            points, colours = torch.cat([face_pts, mouth_pts]), torch.cat([face_cols, mouth_cols])
        sh = torch.zeros(len(points), self.sh_coefficients, 3)
        sh[:, 0] = rgb_to_sh_dc(colours)
        # The set's "colors" parameter holds the SH coefficients, flattened (N, K * 3): densification
        # copies and splits rows of any width.
        self.sets[SET_NAME] = GaussianSet(points, sh.flatten(1), lrs, densify)
        self._seed_box = (points.min(0).values, points.max(0).values)

    def _register_nose_split(self) -> None:
        from talksplat.tracking.template import load_canonical_template

        template = torch.as_tensor(load_canonical_template().vertices, dtype=torch.float32)
        nose, chin = template[NOSE_TIP], template[CHIN]
        # Head frame: the lip region lies on the chin's side of the nose tip along the vertical axis.
        self.register_buffer("nose_height", nose[1].clone())
        self.register_buffer("chin_side", torch.sign(chin[1] - nose[1]))

    def _build_audio_encoder(self, data: SubjectData, cfg: SyncTalkPPConfig):
        if cfg.audio_condition == "mel":
            encoder = AudioEncoder(replace(cfg.audio, window=int(data.audio.shape[1]), input_dim=int(data.audio.shape[2])))
            encoder.fit_normalisation(data.audio[torch.as_tensor(data.train_frames)])
            return encoder
        if cfg.sync.model_dir:
            model, self.sync_info = folder_sync_encoder(cfg.sync.model_dir)
        else:
            if data.subject_dir is None:
                raise UsageError("the sync encoder trains on the subject's video: load the subject from its folder")
            train = data.train_frames
            model, self.sync_info = subject_sync_encoder(data.subject_dir, (int(train[0]), int(train[-1]) + 1),
                                                         cfg.sync.train_steps, cfg.seed)
        encoder = SyncAudioEncoder(cfg.sync, model.cfg)
        encoder.set_sync_encoder(model.audio, data.audio[torch.as_tensor(data.train_frames)])
        return encoder

    # ---------------------------------------------------------------------------------- structure
    def stages(self) -> list[Stage]:
        it, cfg = self.cfg.iterations, self.cfg
        deform_trains = ("gaussians", "networks.audio", "networks.deformation_grid", "networks.deformation")
        return [Stage("static", it.static, trains=("gaussians",), densify=True),
                Stage("deform", it.deform, trains=deform_trains, densify=True, deform=True),
                Stage("generator", it.generator if cfg.expression_generator else 0, trains=("networks.generator",)),
                Stage("restorer", it.restorer if cfg.torso_restorer else 0, trains=("networks.restorer",))]

    def network_param_groups(self) -> list[dict]:
        cfg = self.cfg
        others = [p for n, p in self.deformation.named_parameters() if not n.startswith("encoding.")]
        return [{"name": "audio", "params": [p for p in self.audio.parameters() if p.requires_grad], "lr": cfg.lr_motion},
                {"name": "deformation_grid", "params": [self.deformation.encoding.embeddings], "lr": cfg.lr_grid},
                {"name": "deformation", "params": others, "lr": cfg.lr_motion},
                {"name": "generator", "params": list(self.generator.parameters()), "lr": cfg.lr_generator},
                {"name": "restorer", "params": list(self.restorer.parameters()), "lr": cfg.lr_restorer}]

    # ---------------------------------------------------------------------------------- conditions
    def conditions(self, frame: int) -> Conditions:
        return {"audio_code": self.audio(self.data.audio, frame), "expression": self.expressions[frame]}

    def conditioner(self) -> SyncTalkPPConditioner:
        return SyncTalkPPConditioner(self)

    def frame_audio_features(self, windows: Tensor) -> Tensor:
        """Per-frame audio features (T, A) the expression generator reads: the sync embedding, or
        (mel ablation) the window's mean log-mel."""
        if isinstance(self.audio, SyncAudioEncoder):
            return self.audio.embed(windows)
        return windows.mean(1)

    def pose_condition(self, w2c: Tensor) -> Tensor:
        return (pose_vector(w2c) - self.pose_mean) / self.pose_std

    def region_masks(self, means: Tensor) -> tuple[Tensor, Tensor]:
        """(M_lip, M_exp) per Gaussian (N,): below / above the nose tip in the canonical head frame."""
        lip = ((means.detach()[:, 1] - self.nose_height) * self.chin_side > 0).float()
        return lip, 1.0 - lip

    # ---------------------------------------------------------------------------------- rendering
    def _deformed(self, conditions: Conditions | None, w2c: Tensor) -> tuple[dict[str, Tensor], object]:
        p = self.sets[SET_NAME].params
        sh = p["colors"].view(-1, self.sh_coefficients, 3)
        if conditions is None:
            means, deformation = p["means"], None
            gaussians = {"means": means, "quats": p["quats"], "scales": torch.exp(p["log_scales"]),
                         "opacities": torch.sigmoid(p["opacity_logits"])}
        else:
            audio, expression = conditions["audio_code"], conditions["expression"]
            if self.cfg.masked_attention:
                lip, exp = self.region_masks(p["means"])
                audio, expression = lip[:, None] * audio, exp[:, None] * expression   # V (.) M, per Gaussian
            deformation = self.deformation(p["means"], audio, expression, self.pose_condition(w2c))
            means = p["means"] + deformation.d_means
            gaussians = {"means": means, "quats": p["quats"] + deformation.d_quats,
                         "scales": torch.exp(p["log_scales"] + deformation.d_log_scales),
                         "opacities": torch.sigmoid(p["opacity_logits"] + deformation.d_opacity_logits)}
            sh = torch.cat([sh[:, :1] + deformation.d_colors[:, None], sh[:, 1:]], dim=1)
        gaussians["colors"] = eval_sh(self.cfg.sh_degree, sh, view_directions(means, w2c))
        return gaussians, deformation

    def forward(self, view: View, conditions: Conditions | None, stage: Stage | None = None) -> dict:
        w2c, backdrop = self.view_inputs(view)
        if stage is not None and stage.name in NON_RENDERING_STAGES:
            empty = torch.zeros_like(backdrop)
            return {"image": backdrop, "alpha": empty[..., :1], "head": empty, "metas": {}}
        size = self.cfg.size
        gaussians, deformation = self._deformed(conditions, w2c)
        out = rasterize(gaussians["means"], gaussians["quats"], gaussians["scales"], gaussians["opacities"],
                        gaussians["colors"], w2c, self.data.K, size, size)
        return {"image": out.image + (1.0 - out.alpha) * backdrop, "alpha": out.alpha, "head": out.image,
                "metas": {SET_NAME: out.meta}, "deformation": deformation}

    @torch.no_grad()
    def canonical_gaussians(self) -> dict[str, dict[str, Tensor]]:
        """The undeformed Gaussians with their SH colour evaluated for the first training frame's camera."""
        w2c = self.data.w2c[int(self.data.train_frames[0])]
        gaussians, _ = self._deformed(None, w2c)
        return {SET_NAME: {k: v.detach().clone() for k, v in gaussians.items()}}

    def post_render(self, frame: int, outputs: dict) -> dict:
        """The torso restorer: the source backdrop's head region, expanded by the render margin, is
        inpainted before the rendered head is composited over it (identity until it has trained)."""
        if not self.cfg.torso_restorer or int(self.restorer_steps) == 0:
            return outputs
        with torch.no_grad():
            hole = dilate(self.head_mask(frame), margin_pixels(self.cfg.restorer.render_margin_px, self.cfg.size))
            restored = self.restorer(self.data.backdrop(frame), hole)
        return {**outputs, "image": outputs["head"] + (1.0 - outputs["alpha"]) * restored}

    def head_mask(self, frame: int) -> Tensor:
        return torch.isin(self.data.labels(frame), torch.tensor(HEAD_LABELS)).float()

    # ---------------------------------------------------------------------------------- training
    def losses(self, outputs: dict, batch: Batch, stage: Stage) -> dict[str, Tensor]:
        if stage.name == "generator":
            return self._generator_losses()
        if stage.name == "restorer":
            return self._restorer_losses(batch)
        image, target = outputs["image"], batch.image
        terms = {"l1": (image - target).abs().mean(), "dssim": 1 - ssim(image, target)}
        if stage.deform and self.cfg.losses.mouth_box > 0:
            terms["mouth_box"] = mouth_box_l1(image, target, self.data.labels(batch.frame))
        if stage.deform and self.cfg.losses.eye_box > 0 and self.data.landmarks is not None:
            terms["eye_box"] = eye_box_l1(image, target, self.data.landmarks_px(batch.frame))
        return terms

    def _generator_losses(self) -> dict[str, Tensor]:
        train = torch.as_tensor(self.data.train_frames)      # contiguous: snippets stay in the training part
        centres = self.rng.integers(0, len(train), size=self.cfg.generator.batch)
        return self.generator.losses(self.expressions[train], self._frame_audio[train], centres)

    def _restorer_losses(self, batch: Batch) -> dict[str, Tensor]:
        self.restorer_steps += 1
        image, hole = training_example(batch.image, self.head_mask(batch.frame), self.cfg.restorer, self.rng)
        restored = self.restorer(image, hole)
        pixels = hole.sum().clamp_min(1.0)
        terms = {"restore_l1": ((restored - image).abs() * hole[..., None]).sum() / (3 * pixels)}
        ys, xs = torch.nonzero(hole > 0.5, as_tuple=True)
        if len(ys) and int(ys.max() - ys.min()) >= 11 and int(xs.max() - xs.min()) >= 11:
            box = (slice(int(ys.min()), int(ys.max()) + 1), slice(int(xs.min()), int(xs.max()) + 1))
            terms["restore_perceptual"] = structure_loss(restored[box], image[box])
        else:
            terms["restore_perceptual"] = restored.new_zeros(())
        return terms

    def summary_extras(self) -> dict:
        return {"sync_encoder": self.sync_info, "expression_generator": self.generator_info,
                "restore_perceptual": "substitute for a perceptual loss: D-SSIM + image-gradient L1 on the hole's box",
                "masked_attention": self.cfg.masked_attention, "audio_condition": self.cfg.audio_condition}


class SyncTalkPPConditioner(Conditioner):
    """Audio windows -> {"audio_code", "expression"}; expression ``video`` (the pose frame's tracked
    coefficients), ``neutral`` (training median) or ``generated`` (from the audio)."""

    audio_feature = "mel"

    def __init__(self, recipe: SyncTalkPP) -> None:
        self.recipe = recipe
        self.audio_encoder = recipe.audio
        self.expressions, self.neutral = recipe.expressions, recipe.neutral
        self.generator = recipe.generator if recipe.cfg.expression_generator else None
        self.expression_modes = ("video", "neutral", "generated") if self.generator is not None else ("video", "neutral")
        # New speech gets expressions made from itself, not replayed from the video.
        self.default_expression = "generated" if self.generator is not None else "video"
        behind, ahead = window_extent(self.audio_encoder.config.smoothing_frames)
        if self.generator is not None:
            reach = self.generator.reach
            blink_behind, blink_ahead = self.generator.blink_reach
            behind = max(behind, reach, blink_behind)
            ahead = max(ahead, reach, blink_ahead)
        self.look_behind, self.look_ahead = behind, ahead
        # Per audio window: (feature, blink seed); per audio context: the generator's code.
        size = 4 * (behind + ahead + 1)
        self._windows, self._codes = Memo(size), Memo(size)

    @torch.no_grad()
    def conditions(self, windows: Tensor, index: int, source_frame: int, expression: str) -> Conditions:
        if expression not in self.expression_modes:
            raise UsageError(f"expression must be one of {', '.join(self.expression_modes)} (got {expression!r})")
        code = self._audio_code(windows, index)
        if expression == "video":
            expr = self.expressions[source_frame]
        elif expression == "neutral":
            expr = self.neutral
        else:
            expr = self._generated(windows, index)
        return {"audio_code": code, "expression": expr}

    def _audio_code(self, windows: Tensor, index: int) -> Tensor:
        if not isinstance(self.audio_encoder, SyncAudioEncoder):
            return self.audio_encoder(windows, index)
        idx = temporal_window(index, windows.shape[0], self.audio_encoder.config.smoothing_frames)
        embeddings = torch.stack([self._window(windows[int(k)])[0] for k in idx])
        return self.audio_encoder.code(embeddings, idx, index)

    def _window(self, window: Tensor) -> tuple[Tensor, float, bytes]:
        """(per-frame audio feature, blink seed, key) of one audio window, memoised by its content:
        consecutive frames share all but one window, so each is embedded and hashed once."""
        key = window.numpy().tobytes()
        feature, seed = self._windows.get(key, lambda: (self.recipe.frame_audio_features(window[None])[0],
                                                        window_seed(window)))
        return feature, seed, key

    def _generated(self, windows: Tensor, index: int) -> Tensor:
        """The generator's expression of frame ``index`` from the windows within its reach."""
        lo = max(0, index - self.look_behind)
        hi = min(windows.shape[0], index + self.look_ahead + 1)
        features, seeds, keys = zip(*(self._window(w) for w in windows[lo:hi]), strict=True)
        return self.generator.generate(torch.stack(features), index - lo, np.array(seeds), keys, self._codes)
