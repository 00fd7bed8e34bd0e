"""SDTalk: one-shot talking-head avatars from one image, pretrained on many identities (issue #17).

Unlike the per-subject recipes (``engine.contract.Recipe``: one avatar fitted to one prepared
subject), SDTalk is one network pretrained across subjects and applied to a new face from a single
image. It is therefore NOT registered in ``RECIPES`` (the conformance test trains each registered
recipe on one subject; a one-shot model trained on one subject would make that test meaningless);
``engine.distributed`` runs its training loop instead (DDP over identities), with the engine's
checkpoint, config and loss parts. docs/sdtalk.md says why and how.

The model (the paper's Sec. 3, at CPU sizes):

- **Image encoder**: a small trainable CNN on the source image (plus pixel-coordinate channels) down
  to a feature plane at ``size / plane_stride`` per side; ``encoder = "dinov2:DIR"`` uses a DINOv2
  backbone from a local folder through ``transformers`` instead (optional; never downloaded).
- **Visible branch, dual-lifting**: the feature plane sits in the source camera, perpendicular to
  its viewing axis, at the head's depth; every plane cell predicts two Gaussians lifted in front of
  and behind the plane along its normal (distances in ``[0, lift_range_mm]``), each with a scale,
  rotation, opacity and a ``feature_dim``-d feature.
- **Completion branch**: the fitted head model's mouth and eye vertices (teeth, gums and tongue,
  mouth socket, eyeballs; ``completion_points`` of them, evenly strided) of the source frame:
  learnable per-vertex weights concatenated with the image's global feature -> MLP -> a Gaussian at
  each vertex (offset, scale, rotation, opacity, feature).
- Features of both sets are rasterized together (the rasterizer takes any number of channels) and a
  small convolutional **neural renderer** decodes them (with the alpha) to RGB. The visible
  Gaussians' first three feature channels carry the source colour under their cell (+ a residual)
  and the renderer adds a learned correction to their splat (a direct colour path; see
  ``COLOUR_CHANNELS``).
- **Dual-branch motion**: a coarse motion field on the visible set and a fine one on the completion
  set, each a tri-plane hash grid concatenated with the audio code -> delta position, log-scale,
  rotation and opacity (``fields.motion.MotionField``); the audio code is ``AudioEncoder`` on the
  target frame's audio windows.
- **Losses**: ``l1``; ``perceptual_substitute`` (the paper's LPIPS has no offline weights: D-SSIM +
  image-gradient L1, a SUBSTITUTE); ``lifting`` (mean distance, in cm, from each fitted mesh vertex
  of the source frame to its nearest visible Gaussian); ``lip`` (L1 over the target's lip box,
  ``engine.losses.mouth_box_l1``). **Stages**: ``reconstruction`` (no motion; encoder, branches and
  renderer train) then ``motion`` (reconstruction frozen; motion fields and audio encoder train).

Training samples are (identity, source frame, target frame) with source != target
(``data.collection.SubjectCollection.sample_pair``): the target view is rendered from the Gaussians
lifted from the source image.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talksplat.data.collection import SubjectCollection
from talksplat.data.subject import SubjectData
from talksplat.engine.config import RecipeConfig
from talksplat.engine.contract import Stage
from talksplat.engine.distributed import PretrainJob
from talksplat.engine.losses import mouth_box_l1, structure_loss
from talksplat.errors import TalksplatError, UsageError
from talksplat.fields.hashgrid import HashGridConfig
from talksplat.fields.motion import (
    AudioEncoder,
    AudioEncoderConfig,
    MotionField,
    MotionFieldConfig,
    attention_pool,
    mlp,
    temporal_window,
)
from talksplat.gaussians import rasterize

NAME = "sdtalk"
PAPER = "SDTalk: one-shot talking-head Gaussians from one image, pretrained on many identities"
# Head-model regions the completion branch covers (what a single image rarely shows fully).
COMPLETION_REGIONS = ("teeth", "gums_and_tongue", "mouth_socket", "eyeball_left", "eyeball_right")
# Region whose vertices the lifting loss pulls the visible Gaussians towards.
LIFTING_REGION = "narrow_face"
MM_PER_CM = 10.0
# Parameter groups trained by each stage (names of ``SDTalkModel.param_groups``).
RECONSTRUCTION_GROUPS = ("encoder", "visible", "completion", "renderer")
MOTION_GROUPS = ("audio", "motion_coarse", "motion_grid_coarse", "motion_fine", "motion_grid_fine")
DINOV2_PREFIX = "dinov2:"


@dataclass
class SDTalkIterations:
    reconstruction: int = 2000
    motion: int = 1000


@dataclass
class SDTalkLosses:
    l1: float = 1.0
    # SUBSTITUTE for the paper's LPIPS (no LPIPS backbone ships offline): D-SSIM + image-gradient L1.
    perceptual_substitute: float = 0.2
    lifting: float = 0.1
    lip: float = 1.0          # motion stage only


def _motion(levels: int) -> MotionFieldConfig:
    return MotionFieldConfig(grid=HashGridConfig(num_levels=levels, features_per_level=2, log2_hashmap_size=14),
                             audio_dim=32, expression_dim=0, hidden=64, layers=3,
                             outputs=("position", "scale", "rotation", "opacity"))


@dataclass
class SDTalkConfig(RecipeConfig):
    iterations: SDTalkIterations = field(default_factory=SDTalkIterations)
    losses: SDTalkLosses = field(default_factory=SDTalkLosses)
    batch_size: int = 2                 # samples per process and step (the global batch is this x processes)
    encoder: str = "cnn"                # "cnn" (trainable, default) or "dinov2:DIR" (local folder only)
    encoder_channels: int = 32
    plane_stride: int = 4               # feature plane side = size / plane_stride (a power of two)
    feature_dim: int = 32               # per-Gaussian feature rasterized and decoded
    plane_front_mm: float = 60.0        # the plane lies this far in front of the head model's origin
    lift_range_mm: float = 80.0         # largest lift distance in front of / behind the plane
    completion_points: int = 1024       # mouth and eye vertices of the completion branch
    completion_weight_dim: int = 32     # learnable per-vertex weights
    lifting_points: int = 256           # face vertices the lifting loss uses
    renderer_channels: int = 32
    motion_box_mm: float = 160.0        # motion fields cover [-box, box]^3 of the head frame
    lr: float = 1e-3
    lr_motion: float = 2e-3
    lr_grid: float = 1e-2
    coarse_motion: MotionFieldConfig = field(default_factory=lambda: _motion(8))
    fine_motion: MotionFieldConfig = field(default_factory=lambda: _motion(12))
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    checkpoint_every: int = 100         # steps between checkpoints (and at each stage's end)

    def validate(self) -> None:
        super().validate()
        it = self.iterations
        if min(it.reconstruction, it.motion) < 0:
            raise ValueError("iterations.reconstruction and iterations.motion must be >= 0")
        stride = self.plane_stride
        if stride < 1 or stride & (stride - 1) or self.size % stride or self.size // stride < 4:
            raise ValueError("plane_stride must be a power of two dividing size, leaving a plane >= 4 cells")
        if self.feature_dim < COLOUR_CHANNELS:
            raise ValueError(f"feature_dim must be >= {COLOUR_CHANNELS} (its first channels carry colour)")
        positive = ("batch_size", "encoder_channels", "feature_dim", "completion_points", "completion_weight_dim",
                    "lifting_points", "renderer_channels", "checkpoint_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if min(self.lift_range_mm, self.motion_box_mm) <= 0:
            raise ValueError("lift_range_mm and motion_box_mm must be positive")
        if self.encoder != "cnn" and not self.encoder.startswith(DINOV2_PREFIX):
            raise ValueError(f"encoder must be 'cnn' or 'dinov2:DIR' (got {self.encoder!r})")
        for name in ("coarse_motion", "fine_motion"):
            m = getattr(self, name)
            if m.audio_dim != self.audio.out_dim or m.expression_dim or m.extra_dim:
                raise ValueError(f"{name}.audio_dim must equal audio.out_dim ({self.audio.out_dim}) and "
                                 f"{name}.expression_dim / extra_dim must be 0")


def stages(cfg: SDTalkConfig) -> list[Stage]:
    """Stage 1 reconstruction without motion; stage 2 motion only, reconstruction frozen."""
    return [Stage("reconstruction", cfg.iterations.reconstruction, trains=RECONSTRUCTION_GROUPS),
            Stage("motion", cfg.iterations.motion, trains=MOTION_GROUPS, deform=True)]


TEST_OVERRIDES: dict[str, object] = {
    "size": 32, "plane_stride": 4, "encoder_channels": 8, "feature_dim": 8, "renderer_channels": 8,
    "completion_points": 32, "completion_weight_dim": 8, "lifting_points": 32, "batch_size": 1,
    "iterations.reconstruction": 2, "iterations.motion": 2, "coarse_motion.grid.num_levels": 2,
    "fine_motion.grid.num_levels": 2, "coarse_motion.hidden": 16, "fine_motion.hidden": 16,
    "checkpoint_every": 1}


# ============================================================================================ data
@dataclass
class SourceFrame:
    """What the model reads from one image: the picture, its camera and the fitted head model."""

    image: Tensor          # (S, S, 3) in [0, 1]
    w2c: Tensor            # (4, 4) camera of the image (world = head frame)
    K: Tensor              # (3, 3) at the model's size, pixel centres at +0.5
    completion: Tensor     # (Vc, 3) the fitted mouth and eye vertices in the world
    face: Tensor           # (Vf, 3) the fitted face vertices in the world (lifting loss)


@dataclass
class Sample:
    """One training example: a source frame and the target frame of the same identity."""

    source: SourceFrame
    target_image: Tensor   # (S, S, 3)
    target_w2c: Tensor
    target_labels: Tensor  # (S, S) label map (lip box)
    audio: Tensor          # (T, window, D) the identity's audio windows
    target_frame: int


def strided(indices: np.ndarray, count: int) -> np.ndarray:
    """``count`` evenly spaced entries of ``indices`` (all of them when there are fewer)."""
    if len(indices) <= count:
        return indices
    return indices[np.linspace(0, len(indices) - 1, count).round().astype(np.int64)]


def vertex_sets(cfg: SDTalkConfig) -> tuple[np.ndarray, np.ndarray]:
    """(completion vertex indices, lifting-loss vertex indices) of the bundled head model."""
    from talksplat.headmodel import load_head_model

    model = load_head_model()
    completion = np.concatenate([model.region(name) for name in COMPLETION_REGIONS])
    return strided(completion, cfg.completion_points), strided(model.region(LIFTING_REGION), cfg.lifting_points)


class FittedMesh:
    """One subject's fitted head model (face_model.npz), restricted to the vertices SDTalk reads, in
    the cameras' world (``world_from_model``)."""

    def __init__(self, face_model: dict, indices: np.ndarray) -> None:
        from talksplat.headmodel import load_head_model

        model = load_head_model()
        identity = np.asarray(face_model["identity"], dtype=np.float32)
        neutral = model.neutral[indices] + np.einsum("k,kvc->vc", identity, model.identity_basis[:, indices])
        self.neutral = torch.from_numpy(neutral.astype(np.float32))
        self.basis = torch.from_numpy(model.expression_basis[:, indices].astype(np.float32))
        self.expression = torch.as_tensor(np.asarray(face_model["expression"], dtype=np.float32))
        self.world_from_model = torch.as_tensor(np.asarray(face_model["world_from_model"], dtype=np.float32))

    def world(self, frame: int) -> Tensor:
        """(V, 3) vertices of frame ``frame``'s fitted expression in the world.

        The bundled model's eyeball gaze rotation is left out: the completion branch learns offsets."""
        local = self.neutral + torch.einsum("e,evc->vc", self.expression[frame], self.basis)
        return local @ self.world_from_model[:3, :3].T + self.world_from_model[:3, 3]


def read_face_model(subject_dir: Path) -> dict:
    path = Path(subject_dir) / "face_model.npz"
    if not path.is_file():
        raise UsageError(f"subject {subject_dir} has no face_model.npz; re-run `talksplat prepare VIDEO -o "
                         f"{subject_dir}` (resumable: its face-model step writes it)")
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in ("identity", "expression", "world_from_model")}


class IdentitySet:
    """The multi-identity training set: prepared subjects with their fitted meshes."""

    def __init__(self, collection: SubjectCollection, cfg: SDTalkConfig) -> None:
        self.collection = collection
        completion, face = vertex_sets(cfg)
        self.completion_meshes = [FittedMesh(read_face_model(s.subject_dir), completion) for s in collection.subjects]
        self.face_meshes = [FittedMesh(read_face_model(s.subject_dir), face) for s in collection.subjects]

    def __len__(self) -> int:
        return len(self.collection)

    def source_frame(self, identity: int, frame: int) -> SourceFrame:
        data = self.collection.subjects[identity]
        return SourceFrame(image=data.image(frame), w2c=data.w2c[frame], K=data.K,
                           completion=self.completion_meshes[identity].world(frame),
                           face=self.face_meshes[identity].world(frame))

    def sample(self, identity: int, source: int, target: int) -> Sample:
        data = self.collection.subjects[identity]
        return Sample(source=self.source_frame(identity, source), target_image=data.image(target),
                      target_w2c=data.w2c[target], target_labels=data.labels(target), audio=data.audio,
                      target_frame=target)


def load_identities(subject_dirs: list[Path], cfg: SDTalkConfig) -> IdentitySet:
    """The identities of ``subject_dirs`` (each a prepared subject, or a folder of prepared subjects,
    as ``SubjectCollection.load`` reads); each needs audio and face_model.npz."""
    from talksplat.data.subject import load_subject_data

    subjects: list[SubjectData] = []
    for folder in subject_dirs:
        folder = Path(folder)
        if (folder / "subject.json").is_file():
            subjects.append(load_subject_data(folder, cfg.size, cfg.audio_feature))
        else:
            subjects += SubjectCollection.load(folder, cfg.size, cfg.audio_feature).subjects
    for data in subjects:
        if data.audio is None:
            raise UsageError(f"subject {data.subject_dir} has no audio; pretraining needs speech "
                             "(prepare a video with sound)")
        if len(data.train_frames) < 2:
            raise UsageError(f"subject {data.subject_dir} has fewer than 2 training frames")
    return IdentitySet(SubjectCollection(subjects), cfg)


def global_batch(identities: IdentitySet, seed: int, step: int, size: int) -> list[tuple[int, int, int]]:
    """The ``size`` (identity, source, target) triples of step ``step``: a function of (seed, step)
    only, so every process draws the same global batch, takes its share, and a resumed run draws
    exactly what an uninterrupted one would."""
    rng = np.random.default_rng([seed, step])
    return [identities.collection.sample_pair(rng) for _ in range(size)]


def samples_per_identity(identities: IdentitySet, seed: int, steps: int, size: int) -> list[int]:
    """How many training samples each identity (prepared subject, in the collection's order) gets in
    ``steps`` steps of global batch ``size``: the sampler is uniform over subjects, so a person with
    several clips (several subjects) gets proportionally more; this says how much, without logging
    every draw."""
    counts = [0] * len(identities.collection.subjects)
    for step in range(steps):
        for identity, _, _ in global_batch(identities, seed, step, size):
            counts[identity] += 1
    return counts


# ============================================================================================ networks
class CNNEncoder(nn.Module):
    """Image (S, S, 3) -> (C, S/stride, S/stride) feature plane and a global feature (C,)."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(5, channels, 3, padding=1), nn.ReLU()]
        for _ in range(int(math.log2(stride))):
            layers += [nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.ReLU()]
        layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
        self.net = nn.Sequential(*layers)
        self.out_channels = channels

    def forward(self, image: Tensor) -> Tensor:
        s = image.shape[0]
        ramp = torch.linspace(-1, 1, s, dtype=image.dtype)
        coords = torch.stack(torch.meshgrid(ramp, ramp, indexing="ij"))      # where each pixel is
        return self.net(torch.cat([image.permute(2, 0, 1), coords])[None])[0]


class DINOv2Encoder(nn.Module):
    """A frozen DINOv2 backbone from a local folder (``transformers``; never downloaded) and a trainable
    projection of its patch tokens, resampled to the feature plane."""

    def __init__(self, folder: str, channels: int, plane: int) -> None:
        super().__init__()
        try:
            from transformers import AutoModel
        except ImportError as exc:
            raise UsageError("encoder=dinov2:DIR needs the `transformers` package (pip install transformers); "
                             "or use the default encoder=cnn") from exc
        if not Path(folder).is_dir():
            raise UsageError(f"DINOv2 folder {folder} does not exist; give a local folder with the model's "
                             "config.json and weights (nothing is downloaded), or use encoder=cnn")
        self.backbone = AutoModel.from_pretrained(folder, local_files_only=True).eval()
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.project = nn.Conv2d(self.backbone.config.hidden_size, channels, 1)
        self.plane, self.out_channels = plane, channels
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1))

    def forward(self, image: Tensor) -> Tensor:
        patch = self.backbone.config.patch_size
        side = max(patch, (image.shape[0] // patch) * patch)
        x = F.interpolate(((image.permute(2, 0, 1) - self.mean) / self.std)[None], size=(side, side),
                          mode="bilinear", align_corners=False)
        with torch.no_grad():
            tokens = self.backbone(pixel_values=x).last_hidden_state[:, 1:]     # drop the class token
        grid = side // patch
        tokens = tokens.transpose(1, 2).reshape(1, -1, grid, grid)
        return F.interpolate(self.project(tokens), size=(self.plane, self.plane), mode="bilinear",
                             align_corners=False)[0]


# Per lifted Gaussian: lift distance, log-scale (3), rotation (4), opacity, feature.
LIFT_PARAMS = 1 + 3 + 4 + 1
# The first feature channels of a visible Gaussian carry the source image's colour under its plane
# cell (plus a predicted residual), and the neural renderer starts from their splat: identity and
# texture reach the output through this direct path instead of having to be learned from few
# identities (the lifted features of one-shot Gaussian avatars are likewise sampled from the image).
COLOUR_CHANNELS = 3


class NeuralRenderer(nn.Module):
    """Rasterized features + alpha (H, W, F + 1) -> RGB (H, W, 3): the first three feature channels
    (the splatted colour, see ``COLOUR_CHANNELS``) plus a learned correction, zero at the start."""

    def __init__(self, feature_dim: int, channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(feature_dim + 1, channels, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(channels, 3, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, features: Tensor, alpha: Tensor) -> Tensor:
        x = torch.cat([features, alpha], dim=-1).permute(2, 0, 1)[None]
        return features[..., :COLOUR_CHANNELS] + self.net(x)[0].permute(1, 2, 0)


@dataclass
class Lifted:
    """The Gaussians of one source image: ``visible`` and ``completion`` sets, each a dict of means,
    log_scales, quats, opacity_logits, features."""

    visible: dict[str, Tensor]
    completion: dict[str, Tensor]
    # The motion fields' inputs (means clamped into their box), made once per lifted image: at
    # inference the fields cache their grid encoding for an unchanged input tensor.
    motion_inputs: tuple[Tensor, Tensor] | None = None


class SDTalkModel(nn.Module):
    """Reconstruction (encoder, dual-lifting, completion, neural renderer) and dual-branch motion."""

    name = NAME

    def __init__(self, cfg: SDTalkConfig) -> None:
        super().__init__()
        self.cfg = cfg
        plane = cfg.size // cfg.plane_stride
        if cfg.encoder == "cnn":
            self.encoder: nn.Module = CNNEncoder(cfg.encoder_channels, cfg.plane_stride)
        else:
            self.encoder = DINOv2Encoder(cfg.encoder[len(DINOV2_PREFIX):], cfg.encoder_channels, plane)
        c, f = cfg.encoder_channels, cfg.feature_dim
        self.lift_head = nn.Conv2d(c, 2 * (LIFT_PARAMS + f), 1)     # two Gaussians per plane cell
        self.global_head = nn.Linear(c, cfg.completion_weight_dim)
        self.vertex_weights = nn.Parameter(torch.randn(cfg.completion_points, cfg.completion_weight_dim) * 0.1)
        self.completion_mlp = mlp(2 * cfg.completion_weight_dim, 64, 3 + LIFT_PARAMS - 1 + f, 3)
        self.renderer = NeuralRenderer(f, cfg.renderer_channels)
        box = torch.full((3,), cfg.motion_box_mm)
        self.coarse = MotionField(cfg.coarse_motion, -box, box)
        self.fine = MotionField(cfg.fine_motion, -box, box)
        self.audio_encoder = AudioEncoder(cfg.audio)

    # ------------------------------------------------------------------------------ structure
    def param_groups(self) -> list[dict]:
        cfg = self.cfg

        def trainable(module: nn.Module) -> list[nn.Parameter]:
            return [p for p in module.parameters() if p.requires_grad]

        def grid_and_rest(field_: MotionField) -> tuple[list, list]:
            return [field_.encoding.embeddings], [p for n, p in field_.named_parameters() if not n.startswith("encoding.")]

        coarse_grid, coarse_rest = grid_and_rest(self.coarse)
        fine_grid, fine_rest = grid_and_rest(self.fine)
        return [{"name": "encoder", "params": trainable(self.encoder), "lr": cfg.lr},
                {"name": "visible", "params": list(self.lift_head.parameters()), "lr": cfg.lr},
                {"name": "completion", "params": [self.vertex_weights, *self.global_head.parameters(),
                                                  *self.completion_mlp.parameters()], "lr": cfg.lr},
                {"name": "renderer", "params": list(self.renderer.parameters()), "lr": cfg.lr},
                {"name": "audio", "params": list(self.audio_encoder.parameters()), "lr": cfg.lr_motion},
                {"name": "motion_coarse", "params": coarse_rest, "lr": cfg.lr_motion},
                {"name": "motion_grid_coarse", "params": coarse_grid, "lr": cfg.lr_grid},
                {"name": "motion_fine", "params": fine_rest, "lr": cfg.lr_motion},
                {"name": "motion_grid_fine", "params": fine_grid, "lr": cfg.lr_grid}]

    def fit_audio_normalisation(self, identities: IdentitySet) -> None:
        """Per-band audio statistics over every identity (buffers saved with the weights)."""
        windows = torch.cat([s.audio for s in identities.collection.subjects])
        self.audio_encoder.fit_normalisation(windows)

    # ------------------------------------------------------------------------------ reconstruction
    def lift(self, source: SourceFrame) -> Lifted:
        """The canonical (undriven) Gaussians of a source image."""
        cfg = self.cfg
        features = self.encoder(source.image)                           # (C, P, P)
        raw = self.lift_head(features).permute(1, 2, 0)                  # (P, P, 2 * (LIFT_PARAMS + F))
        plane = raw.shape[0]
        raw = raw.reshape(plane * plane, 2, LIFT_PARAMS + cfg.feature_dim)
        visible = self._dual_lift(raw, source, plane)
        completion = self._complete(features.mean(dim=(1, 2)), source.completion)
        return Lifted(visible, completion)

    def _dual_lift(self, raw: Tensor, source: SourceFrame, plane: int) -> dict[str, Tensor]:
        """Two Gaussians per plane cell, lifted towards (-) and away from (+) the camera along the
        plane's normal (the source camera's axis), placed in the world."""
        cfg, K, w2c = self.cfg, source.K, source.w2c
        depth = w2c[2, 3] - cfg.plane_front_mm
        centres = (torch.arange(plane, dtype=torch.float32) + 0.5) * cfg.plane_stride   # pixel coordinates
        v, u = torch.meshgrid(centres, centres, indexing="ij")
        rays = torch.stack([(u.flatten() - K[0, 2]) / K[0, 0], (v.flatten() - K[1, 2]) / K[1, 1],
                            torch.ones(plane * plane)], dim=-1)          # camera ray at unit depth
        sign = torch.tensor([-1.0, 1.0])
        lift = sign * torch.sigmoid(raw[..., 0]) * cfg.lift_range_mm    # (P*P, 2)
        z = depth + lift
        cam = rays[:, None, :] * z[..., None]                            # (P*P, 2, 3)
        world = (cam - w2c[:3, 3]) @ w2c[:3, :3]                         # x_world = R^T (x_cam - t)
        cell_mm = depth * cfg.plane_stride / K[0, 0]                      # one plane cell at the plane's depth
        # The camera's rotation turns the predicted (camera-frame) rotation into the world's.
        quats = quat_multiply(rotation_to_quat(w2c[:3, :3].T), F.normalize(raw[..., 4:8] + QUAT_IDENTITY, dim=-1))
        return {"means": world.reshape(-1, 3),
                "log_scales": (torch.log(cell_mm * 0.6) + 2.0 * torch.tanh(raw[..., 1:4])).reshape(-1, 3),
                "quats": quats.reshape(-1, 4),
                "opacity_logits": (raw[..., 8] + 2.0).reshape(-1),
                "features": self._with_source_colour(raw[..., LIFT_PARAMS:], source.image).reshape(-1, cfg.feature_dim)}

    def _with_source_colour(self, features: Tensor, image: Tensor) -> Tensor:
        """(P*P, 2, F) predicted features with the plane cell's mean source colour added to the first
        ``COLOUR_CHANNELS``."""
        stride = self.cfg.plane_stride
        colour = F.avg_pool2d(image.permute(2, 0, 1)[None], stride)[0].permute(1, 2, 0).reshape(-1, 1, 3)
        return torch.cat([features[..., :COLOUR_CHANNELS] + colour, features[..., COLOUR_CHANNELS:]], dim=-1)

    def _complete(self, pooled: Tensor, vertices: Tensor) -> dict[str, Tensor]:
        """A Gaussian at each mouth/eye vertex from its learnable weights and the global feature."""
        cfg = self.cfg
        g = self.global_head(pooled).expand(cfg.completion_points, -1)
        out = self.completion_mlp(torch.cat([self.vertex_weights, g], dim=-1))
        n = vertices.shape[0]
        out = out[:n]        # a model with fewer vertices (never at the default sizes) uses the first ones
        return {"means": vertices + 2.0 * torch.tanh(out[:, :3]),       # within 2 mm of the vertex
                "log_scales": math.log(1.5) + 1.5 * torch.tanh(out[:, 3:6]),
                "quats": F.normalize(out[:, 6:10] + QUAT_IDENTITY, dim=-1),
                "opacity_logits": out[:, 10],
                "features": out[:, 11:]}

    # ------------------------------------------------------------------------------ motion
    def audio_code(self, audio: Tensor, frame: int, codes: Tensor | None = None) -> Tensor:
        """The smoothed audio code of ``frame``; ``codes`` (``audio_codes(audio)``, at inference) saves
        re-encoding the neighbouring windows every frame (the same result)."""
        if codes is None:
            return self.audio_encoder(audio, frame)
        idx = temporal_window(frame, codes.shape[0], self.cfg.audio.smoothing_frames)
        return attention_pool(codes[idx], self.audio_encoder.attention)

    def audio_codes(self, audio: Tensor) -> Tensor:
        """Every frame's unsmoothed code (T, code): encoded once for a whole clip."""
        return self.audio_encoder.encode(audio)

    def drive(self, lifted: Lifted, audio_code: Tensor | None) -> Lifted:
        """The lifted Gaussians moved by the coarse (visible) and fine (completion) motion fields."""
        if audio_code is None:
            return lifted
        box = self.cfg.motion_box_mm
        if lifted.motion_inputs is None:
            lifted.motion_inputs = (lifted.visible["means"].clamp(-box, box), lifted.completion["means"].clamp(-box, box))
        moved = []
        for gaussians, motion, inputs in ((lifted.visible, self.coarse, lifted.motion_inputs[0]),
                                          (lifted.completion, self.fine, lifted.motion_inputs[1])):
            d = motion(inputs, audio_code)
            moved.append({"means": gaussians["means"] + d.d_means,
                          "log_scales": gaussians["log_scales"] + d.d_log_scales,
                          "quats": gaussians["quats"] + d.d_quats,
                          "opacity_logits": gaussians["opacity_logits"] + d.d_opacity_logits,
                          "features": gaussians["features"]})
        return Lifted(*moved)

    # ------------------------------------------------------------------------------ rendering
    def render(self, lifted: Lifted, w2c: Tensor, K: Tensor) -> dict[str, Tensor]:
        """Both sets rasterized together as features, decoded to RGB: ``image`` (S, S, 3), ``alpha``."""
        g = {k: torch.cat([lifted.visible[k], lifted.completion[k]]) for k in lifted.visible}
        size = self.cfg.size
        out = rasterize(g["means"], g["quats"], torch.exp(g["log_scales"]), torch.sigmoid(g["opacity_logits"]),
                        g["features"], w2c, K, size, size)
        return {"image": self.renderer(out.image, out.alpha), "alpha": out.alpha, "features": out.image}

    # ------------------------------------------------------------------------------ training
    def forward(self, samples: list[Sample], stage: str) -> dict[str, Tensor]:
        """Unweighted loss terms, each the mean over ``samples`` (the engine weights and sums them;
        DDP averages the gradients of equal per-process batches: the mean over the global batch)."""
        per_sample = [self.sample_losses(s, stage) for s in samples]
        return {k: torch.stack([terms[k] for terms in per_sample]).mean() for k in per_sample[0]}

    def sample_losses(self, sample: Sample, stage: str) -> dict[str, Tensor]:
        motion = stage == "motion"
        with torch.set_grad_enabled(torch.is_grad_enabled() and not motion):   # frozen in the motion stage
            lifted = self.lift(sample.source)
        code = self.audio_code(sample.audio, sample.target_frame) if motion else None
        out = self.render(self.drive(lifted, code), sample.target_w2c, sample.source.K)
        image, target = out["image"], sample.target_image
        terms = {"l1": (image - target).abs().mean(), "perceptual_substitute": structure_loss(image, target)}
        if motion:
            terms["lip"] = mouth_box_l1(image, target, sample.target_labels)
        else:
            terms["lifting"] = lifting_distance(sample.source.face, lifted.visible["means"])
        return terms


# ============================================================================================ helpers
QUAT_IDENTITY = torch.tensor([1.0, 0.0, 0.0, 0.0])


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product a ⊗ b of (w, x, y, z) quaternions (broadcasting)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], dim=-1)


def rotation_to_quat(R: Tensor) -> Tensor:
    """(3, 3) rotation -> (w, x, y, z) (Shepperd's method, the branch with the largest pivot)."""
    m = R.double()
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    candidates = torch.stack([trace, m[0, 0], m[1, 1], m[2, 2]])
    k = int(candidates.argmax())
    if k == 0:
        s = torch.sqrt(1 + trace) * 2
        q = torch.stack([s / 4, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s])
    elif k == 1:
        s = torch.sqrt(1 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = torch.stack([(m[2, 1] - m[1, 2]) / s, s / 4, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s])
    elif k == 2:
        s = torch.sqrt(1 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = torch.stack([(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, s / 4, (m[1, 2] + m[2, 1]) / s])
    else:
        s = torch.sqrt(1 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = torch.stack([(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, s / 4])
    return q.float()


def lifting_distance(vertices: Tensor, means: Tensor) -> Tensor:
    """Mean distance in cm from each fitted mesh vertex to its nearest visible Gaussian."""
    return torch.cdist(vertices, means).min(dim=1).values.mean() / MM_PER_CM


def build_job(subject_dirs: list[str], cfg: SDTalkConfig) -> PretrainJob:
    """The pretraining job for ``engine.distributed``: the model (seeded from ``cfg.seed``, so
    identical in every process), its stages, the sampler over identities and frames, the loss
    weights. A top-level function: spawned processes receive it by reference."""
    identities = load_identities([Path(p) for p in subject_dirs], cfg)
    torch.manual_seed(cfg.seed)
    model = SDTalkModel(cfg)
    model.fit_audio_normalisation(identities)
    seen = [{"name": s.name, "train_frames": len(s.train_frames), **s.fingerprint}
            for s in identities.collection.subjects]
    return PretrainJob(model=model, stages=stages(cfg),
                       draw=lambda step, n: global_batch(identities, cfg.seed, step, n),
                       make=lambda item: identities.sample(*item),
                       weights=dataclasses.asdict(cfg.losses), subjects=seen)


def check_config(cfg: SDTalkConfig) -> None:
    try:
        cfg.validate()
    except ValueError as exc:
        raise UsageError(f"invalid sdtalk settings: {exc}") from exc


__all__ = ["NAME", "PAPER", "SDTalkConfig", "SDTalkModel", "Sample", "SourceFrame", "TalksplatError",
           "build_job", "global_batch", "load_identities", "samples_per_identity", "stages"]
