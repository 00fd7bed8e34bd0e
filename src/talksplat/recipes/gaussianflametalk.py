"""GaussianFlameTalk (Gaussians rigged to a head mesh, driven by an audio-to-expression transformer) as
a composition of talksplat's shared parts. The head model is ICT-FaceKit (``talksplat.headmodel``),
standing in for FLAME.

Gaussian avatar (GaussianAvatars-style binding; our implementation of the idea, no code copied):

- One Gaussian set (``avatar``). ``attrs["triangle"]`` binds each Gaussian to a triangle of the fitted
  head mesh: its position and rotation are in the triangle's local frame (origin the centroid, axes
  the first edge, the in-plane perpendicular and the normal), its scale is multiplied by the
  triangle's size. We measure that size *relative to the triangle in the subject's neutral mesh*, so
  local units are millimetres at rest: densification thresholds, learning rates and the regulariser
  read in the same units as in the other recipes (a per-triangle constant rescaling of GaussianAvatars'
  local coordinates, otherwise the same binding). The engine's densification copies ``attrs`` to
  clones and split children, so children stay bound to their parent's triangle.
- Each frame's mesh: the head model with the subject's fitted identity (fixed), the frame's fitted
  expression (53 blendshapes) plus a learned per-frame offset, placed in the world by the fit's
  ``world_from_model`` (the stabilised cameras then move, as for TalkingGaussian's head; or the face
  model's own per-frame poses, ``pose_source = "fit"``) composed with a learned per-frame rotation,
  translation and scale. The offsets are network
  parameters (groups ``mesh_expression`` and ``mesh_pose``), fine-tuned jointly with the Gaussians
  and kept small (the pose corrections also smooth in time) by regularisers. The pose corrections
  pose the training frames only: rendered, they replayed each source frame's residual and the head
  wobbled (``render_pose_corrections``; docs/gaussianflametalk.md).
- What the mesh does not cover: hair pixels off the mesh (beyond the scalp) are seeded as Gaussians
  bound rigidly to the head frame (``triangle = -1``: the per-frame model -> world transform, the
  same learned pose corrections, no expression); torso and neck come from the source frame's
  backdrop as in TalkingGaussian (``SubjectData.backdrop``). The inside of the mouth is the model's
  teeth, gums, tongue and mouth socket, seeded from the frame with the widest mouth.

FlameTalk (audio -> expression): the subject's audio features (``audio_feature``, log-mel windows by
default) standardised and linearly projected; a small transformer decoder (``nn.TransformerDecoder``)
whose queries are the projected audio plus a periodic positional encoding plus a style embedding of
the subject's neutral mesh (a linear map of its 68 landmark vertices); self-attention under a causal
mask with FaceFormer's period-wise linear bias, cross-attention under an alignment mask (frame t sees
the audio of frames t - alignment_frames + 1 .. t only); a linear motion decoder to the jaw and mouth
blendshapes, added to a linear prior (not in the paper; ``flametalk.linear_prior``): a ridge map from
each frame's own audio window to those blendshapes, fitted in closed form on the training frames, so
the transformer learns the residual (on a 20-30 s clip it alone barely beat the mean; docs).
Loss (eq. 2): mean squared vertex distance (mm^2) between the mesh of the predicted mouth parameters
and the ground-truth mesh driven only by the tracked (fine-tuned) jaw/mouth parameters, every other
parameter at the neutral template, computed through the Gram matrix of the mouth blendshapes over
the vertices they move (exactly the vertex-space L2, cheaper).

Stages: ``avatar`` (Gaussians + per-frame mesh parameters, densify; the mesh teacher-forced with the
tracked expressions) then ``flametalk`` (only FlameTalk trains; nothing is rendered in its steps, since
no rendered pixel depends on it while training). Rendering new audio: FlameTalk's jaw/mouth weights +
the source frame's other weights (``video``) or the training median (``neutral``) -> mesh -> Gaussians.
The decoder only looks back (``look_ahead`` = 0 frames; each frame's audio window itself reaches
107.5 ms past the frame's start, which the streaming feature accounts for).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talksplat.core.labels import FACE_LABELS, HAIR, INSIDE_MOUTH, NECK
from talksplat.data.subject import FACE_MODEL_FILE, SubjectData
from talksplat.engine.config import RecipeConfig
from talksplat.engine.contract import Batch, Conditioner, Conditions, Recipe, Stage, View
from talksplat.engine.losses import mouth_box_l1, ssim
from talksplat.errors import TalksplatError
from talksplat.features.lipstate import MIN_TRAIN_FRAMES, fit_audio_to_lips
from talksplat.gaussians import rasterize
from talksplat.gaussians.gaussian_set import DensifyConfig, GaussianSet
from talksplat.gaussians.model import GaussianLearningRates
from talksplat.gaussians.rasterize import project_points
from talksplat.headmodel.model import HeadModel, gaze_angles, load_head_model, rotate_about

SET_NAME = "avatar"
CORRECTED_POSE = "corrected_pose"   # a training condition: pose the mesh with the frame's learned correction
POSE_SOURCES = ("camera", "fit")
RIGID = -1                        # attrs["triangle"] of a Gaussian bound to the head frame, not a triangle
MOUTH_INTERIOR_REGIONS = ("teeth", "gums_and_tongue", "mouth_socket")
# FlameTalk predicts the blendshapes whose names start with these (ARKit jaw*/mouth*: 4 + 23).
MOUTH_PARAM_PREFIXES = ("jaw", "mouth")
# Blendshapes left unsmoothed when rendering (render_expression_sigma): blinks last 3-6 frames, a smoothing
# of 2 frames would halve them.
EXPRESSION_UNSMOOTHED = ("eyeBlink",)
# A vertex belongs to the mouth region (eq. 2's vertices, the held-out error) when a mouth blendshape at
# weight 1 moves it by more than this.
MOUTH_REGION_MIN_MM = 0.5
# Seeding: a visible triangle is one whose centroid is within this depth of the nearest centroid
# projecting into the same cell of this many pixels.
ZBUFFER_CELL_PX = 3
ZBUFFER_TOLERANCE_MM = 4.0
# A head pixel is bound to the nearest visible triangle within this distance (mm at the triangle's depth),
# else rigidly to the head frame (hair beyond the scalp).
BIND_RADIUS_MM = 6.0
EPS = 1e-8


# ====================================================================================== config
@dataclass
class StageIterations:
    avatar: int = 3000
    flametalk: int = 1000


@dataclass
class GaussianFlameTalkLosses:
    """Weights of the named loss terms (the engine multiplies and sums)."""

    l1: float = 0.8
    dssim: float = 0.2
    # Extra L1 over the lips' box (as TalkingGaussian's recipe: the mouth is a few hundred pixels).
    mouth_box: float = 2.0
    # GaussianAvatars-style binding regulariser: local offsets beyond binding_free_offset_mm and scales
    # beyond binding_free_scale_mm (triangle-bound Gaussians only), so Gaussians stay near their triangle.
    binding: float = 0.01
    # Squared per-frame corrections of the mesh: expression offsets (blendshape weight units) and pose
    # (rotation in degrees, translation in mm, log-scale x 100).
    expression_reg: float = 1.0
    pose_reg: float = 0.01
    # Squared second difference of the pose corrections over time (same units): slow tracking errors are
    # corrected, frame-to-frame jitter is not learned (it made the driven renders wobble).
    pose_smooth: float = 1.0
    flametalk: float = 1.0    # eq. 2, mm^2


@dataclass
class FlameTalkConfig:
    hidden: int = 64
    heads: int = 4
    layers: int = 2
    feedforward: int = 128
    # Frames of audio context (look-behind + the frame itself) each prediction sees. German anchor clip
    # (450 training frames), held-out mouth vertex RMS: 25 frames without dropout 1.56 mm, 10 frames with
    # dropout 0.2 1.30 mm (mean expression 1.99 mm); a short clip overfits a long context.
    context_frames: int = 10
    # Period (frames) of the periodic positional encoding and of the causal mask's bias steps.
    period: int = 25
    # Cross-attention alignment: frame t attends to the audio of frames t - alignment_frames + 1 .. t.
    alignment_frames: int = 3
    dropout: float = 0.2
    batch_windows: int = 8
    lr: float = 1e-3
    # A linear prior under the decoder: a ridge map from each frame's own audio window to the jaw/mouth
    # weights (features.lipstate, the map TalkingGaussian's lip states use), fitted in closed form on the
    # training frames' tracked weights; the transformer learns the residual. A few hundred frames are
    # too few for the transformer alone (docs/gaussianflametalk.md, "FlameTalk's linear prior").
    linear_prior: bool = True
    # Ridge predictions shrink towards the mean; each weight's is scaled up to the tracked spread, by at most this.
    linear_prior_max_gain: float = 2.0


@dataclass
class GaussianFlameTalkConfig(RecipeConfig):
    absent_in_older_checkpoints: ClassVar[dict[str, object]] = {"flametalk.linear_prior": False}
    iterations: StageIterations = field(default_factory=StageIterations)
    losses: GaussianFlameTalkLosses = field(default_factory=GaussianFlameTalkLosses)
    head_points: int = 8000           # seeded on skin, eyes, lips and hair pixels of a training frame
    mouth_points: int = 1000          # seeded on the mouth interior (teeth, tongue, gums, socket)
    max_gaussians: int = 30_000
    lr_means_px: float = 0.05         # local position learning rate in pixels per step at the subject's depth
    lr_mesh_expression: float = 1e-3  # per-frame blendshape offsets
    lr_mesh_pose: float = 1e-4        # per-frame rotation (rad), translation (mm / 100), log-scale
    refine_every: int = 100
    binding_free_offset_mm: float = 5.0
    binding_free_scale_mm: float = 3.0
    # Where each frame's head pose comes from. "camera": the mesh stays put in the world and the
    # stabilised cameras move (as TalkingGaussian's head); "fit": the face model's own per-frame poses.
    # German anchor, jitter (RMS second difference of the rotation increments): fit 0.73 deg, stabilised
    # cameras 0.52 deg; the learned, smoothed per-frame corrections take up what the cameras miss.
    pose_source: str = "camera"
    # Apply the learned per-frame pose corrections when rendering too (they always apply in training).
    # German anchor, driven by unseen speech, stability (lower = steadier; TalkingGaussian 0.158/0.166):
    # with them 0.238/0.242 even when smoothed, without them about TalkingGaussian's (see the docs).
    render_pose_corrections: bool = False
    # Rendering (new audio with --expression video, self-reenactment): the source frames' non-mouth
    # expression (tracked + learned offset) is smoothed over time by a Gaussian of this many frames
    # (sigma; 0 = off), except the blinks (EXPRESSION_UNSMOOTHED). The tracked weights jitter from frame
    # to frame (white: |2nd difference| ~ 1.6x |1st|) and the per-frame offsets add to it; replayed by
    # the pose loop they moved the nose by 0.19 mm per frame on the German anchor (docs).
    render_expression_sigma: float = 2.0
    flametalk: FlameTalkConfig = field(default_factory=FlameTalkConfig)

    def validate(self) -> None:
        super().validate()
        if min(self.iterations.avatar, self.iterations.flametalk) < 0:
            raise ValueError("stage iteration counts must be >= 0")
        if min(self.head_points, self.refine_every, self.max_gaussians) < 1 or self.mouth_points < 0:
            raise ValueError("head_points, refine_every and max_gaussians must be >= 1, mouth_points >= 0")
        if self.render_expression_sigma < 0:
            raise ValueError(f"render_expression_sigma must be >= 0 frames (got {self.render_expression_sigma})")
        if self.pose_source not in POSE_SOURCES:
            raise ValueError(f"pose_source must be one of {POSE_SOURCES} (got {self.pose_source!r})")
        ft = self.flametalk
        if min(ft.hidden, ft.heads, ft.layers, ft.feedforward, ft.context_frames, ft.period,
               ft.alignment_frames, ft.batch_windows) < 1:
            raise ValueError("every flametalk size must be >= 1")
        if ft.linear_prior_max_gain < 1.0:
            raise ValueError(f"flametalk.linear_prior_max_gain must be >= 1 (got {ft.linear_prior_max_gain})")
        if not 0.0 <= ft.dropout < 1.0:
            raise ValueError(f"flametalk.dropout must be in [0, 1) (got {ft.dropout})")
        if ft.hidden % ft.heads:
            raise ValueError(f"flametalk.hidden ({ft.hidden}) must be a multiple of flametalk.heads ({ft.heads})")


# ====================================================================================== geometry
def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product of (..., 4) wxyz quaternions: the rotation b, then a."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz,
                        aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx,
                        aw * bz + ax * by - ay * bx + az * bw], dim=-1)


def matrix_to_quat(m: Tensor) -> Tensor:
    """(..., 3, 3) rotations -> (..., 4) unit wxyz quaternions (w >= 0).

    Of the four algebraically equal solutions (divided by 4w, 4x, 4y or 4z), each row takes the one
    with the largest divisor: the others lose precision (or divide by ~0) near 180-degree turns."""
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    four = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    root = torch.sqrt(four.clamp_min(EPS))                                        # 2|w|, 2|x|, 2|y|, 2|z|
    d10, d01 = m[..., 1, 0], m[..., 0, 1]
    d20, d02 = m[..., 2, 0], m[..., 0, 2]
    d21, d12 = m[..., 2, 1], m[..., 1, 2]
    candidates = torch.stack([
        torch.stack([root[..., 0] ** 2, d21 - d12, d02 - d20, d10 - d01], -1) / (2 * root[..., 0:1]),
        torch.stack([d21 - d12, root[..., 1] ** 2, d10 + d01, d02 + d20], -1) / (2 * root[..., 1:2]),
        torch.stack([d02 - d20, d10 + d01, root[..., 2] ** 2, d12 + d21], -1) / (2 * root[..., 2:3]),
        torch.stack([d10 - d01, d20 + d02, d21 + d12, root[..., 3] ** 2], -1) / (2 * root[..., 3:4]),
    ], dim=-2)                                                                     # (..., 4 solutions, 4)
    best = four.argmax(-1)
    q = torch.gather(candidates, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = F.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def axis_angle_to_matrix(v: Tensor) -> Tensor:
    """(..., 3) axis-angle (rad) -> (..., 3, 3) via Rodrigues; smooth at 0 (first-order series)."""
    theta2 = (v * v).sum(-1, keepdim=True)[..., None]
    theta = torch.sqrt(theta2 + EPS)
    zero = torch.zeros_like(v[..., 0])
    x, y, z = v.unbind(-1)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*v.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=v.dtype).expand_as(k)
    return eye + torch.sin(theta) / theta * k + (1 - torch.cos(theta)) / (theta2 + EPS) * (k @ k)


def triangle_frames(corners: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(N, 3 corners, 3) -> rotation (N, 3, 3) with columns [first edge, in-plane perpendicular,
    normal], centroid (N, 3), size (N,) = mean edge length."""
    v0, v1, v2 = corners.unbind(-2)
    e1, e2 = v1 - v0, v2 - v0
    x = F.normalize(e1, dim=-1)
    normal = F.normalize(torch.cross(e1, e2, dim=-1), dim=-1)
    y = torch.cross(normal, x, dim=-1)
    size = (e1.norm(dim=-1) + e2.norm(dim=-1) + (v2 - v1).norm(dim=-1)) / 3
    return torch.stack([x, y, normal], dim=-1), corners.mean(-2), size


@dataclass
class Frames:
    """Per-Gaussian local -> world frames: ``world = scale * rotation @ local + origin``."""

    rotation: Tensor   # (N, 3, 3)
    origin: Tensor     # (N, 3)
    scale: Tensor      # (N,)


def bind(local: dict[str, Tensor], frames: Frames) -> dict[str, Tensor]:
    """Rasterizer inputs in the world from local Gaussian parameters (means, quats, log_scales,
    opacity_logits, colors) and each Gaussian's frame: position and rotation composed with the frame,
    scale multiplied by the frame's scale."""
    k = frames.scale[:, None]
    means = k * torch.einsum("nij,nj->ni", frames.rotation, local["means"]) + frames.origin
    quats = quat_multiply(matrix_to_quat(frames.rotation), F.normalize(local["quats"], dim=-1))
    return {"means": means, "quats": quats, "scales": k * torch.exp(local["log_scales"]),
            "opacities": torch.sigmoid(local["opacity_logits"]), "colors": local["colors"]}


def unbind_points(points: Tensor, frames: Frames) -> Tensor:
    """World points (N, 3) -> local coordinates in their frames (the inverse of :func:`bind`'s means)."""
    return torch.einsum("nji,nj->ni", frames.rotation, points - frames.origin) / frames.scale[:, None]


# ====================================================================================== the mesh
class MeshTracks(nn.Module):
    """The subject's fitted head mesh per frame, with learned per-frame corrections.

    Vertices of frame f for an expression e (53,): ``M(e) = neutral + identity + e @ basis`` (eyeballs
    turned for gaze), then the learned correction in the model frame (``scale * Rot(rotation) X +
    translation``), then model -> world (where the Gaussians are rasterized): ``world_from_model``
    (``pose_source`` "camera") or the face model's pose of frame f followed by the inverse of the
    subject's camera ``w2c[f]`` ("fit")."""

    def __init__(self, data: SubjectData, model: HeadModel, pose_source: str = "camera") -> None:
        super().__init__()
        fit = _face_model_file(data)
        self.model = model
        identity = torch.as_tensor(fit["identity"], dtype=torch.float32)
        base = torch.from_numpy(model.neutral) + torch.einsum("k,kvc->vc", identity,
                                                              torch.from_numpy(model.identity_basis))
        self.identity_mesh = base                                          # (V, 3), derived: not saved
        self.basis = torch.from_numpy(model.expression_basis)             # (53, V, 3), shared, not saved
        n = data.n_frames
        # The fit (from the subject, not saved with the weights): tracked expressions, poses.
        self.tracked = torch.as_tensor(data.channel("face_model/expression"), dtype=torch.float32)
        if pose_source == "camera":
            self.pose_rotation, self.pose_translation, self.pose_scale = _camera_poses(fit, n)
        else:
            self.pose_rotation, self.pose_translation, self.pose_scale = _fitted_poses(data, fit)
        self.expression_offset = nn.Parameter(torch.zeros(n, model.num_expressions))
        self.rotation_offset = nn.Parameter(torch.zeros(n, 3))       # axis-angle, rad
        self.translation_offset = nn.Parameter(torch.zeros(n, 3))    # mm / POSE_TRANSLATION_UNIT
        self.log_scale_offset = nn.Parameter(torch.zeros(n, 1))

    def expression(self, frame: int) -> Tensor:
        """The frame's fine-tuned expression (tracked + learned offset), differentiable."""
        return self.tracked[frame] + self.expression_offset[frame]

    @torch.no_grad()
    def smoothed_expressions(self, sigma: float, keep: list[int]) -> Tensor:
        """(n, 53) fine-tuned expressions of all frames, each blendshape but ``keep`` smoothed over time
        by a Gaussian of ``sigma`` frames (ends reflected, as the pose loop ping-pongs)."""
        expressions = self.tracked + self.expression_offset
        if sigma <= 0:
            return expressions.clone()
        radius = max(1, math.ceil(3 * sigma))
        taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
        series = expressions.T[:, None, :]                                   # (53, 1, n)
        # reflect needs more frames than the padding; a clip that short is held at its ends instead
        padded = F.pad(series, (radius, radius), mode="reflect" if len(expressions) > radius else "replicate")
        out = F.conv1d(padded, (taps / taps.sum())[None, None])[:, 0, :].T.clone()
        out[:, keep] = expressions[:, keep]
        return out

    def model_vertices(self, expression: Tensor) -> Tensor:
        """(V, 3) head-frame mesh of one expression (53,), eyeballs turned for gaze."""
        verts = self.identity_mesh + torch.einsum("e,evc->vc", expression, self.basis)
        names = self.model.expression_names
        out = [verts]
        for side, region in (("L", "eyeball_left"), ("R", "eyeball_right")):
            start, stop = self.model.regions[region]
            yaw, pitch = gaze_angles(expression[None], names, side)
            ball = verts[None, start:stop]
            out.append((start, stop, rotate_about(ball, ball.mean(1), yaw, pitch)[0]))
        turned = verts.clone()
        for start, stop, ball in out[1:]:
            turned[start:stop] = ball
        return turned

    def head_frame(self, frame: int, corrected: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        """(rotation (3, 3), translation (3,), scale ()) of frame ``frame``'s model -> world transform,
        with the learned correction when ``corrected``."""
        if not corrected:
            return self.pose_rotation[frame], self.pose_translation[frame], torch.tensor(self.pose_scale)
        correction = axis_angle_to_matrix(self.rotation_offset[frame])
        scale = self.pose_scale * torch.exp(self.log_scale_offset[frame, 0])
        rotation = self.pose_rotation[frame] @ correction
        shift = self.translation_offset[frame] * POSE_TRANSLATION_UNIT
        translation = self.pose_scale * (self.pose_rotation[frame] @ shift) + self.pose_translation[frame]
        return rotation, translation, scale

    def world_vertices(self, frame: int, expression: Tensor, corrected: bool = True) -> Tensor:
        rotation, translation, scale = self.head_frame(frame, corrected)
        return scale * self.model_vertices(expression) @ rotation.T + translation


# The translation offset is learned in units of this many mm, so one learning rate suits all pose terms.
POSE_TRANSLATION_UNIT = 100.0
POSE_REG_DEGREES = 180.0 / math.pi
POSE_REG_LOG_SCALE = 100.0


def _camera_poses(fit: dict[str, np.ndarray], n: int) -> tuple[Tensor, Tensor, float]:
    """Model -> world of every frame from ``world_from_model``: the mesh stays put in the world and the
    stabilised cameras move, as TalkingGaussian's head does."""
    similarity = torch.as_tensor(fit["world_from_model"], dtype=torch.float32)
    linear = similarity[:3, :3]
    scale = float(torch.linalg.det(linear).abs() ** (1.0 / 3.0))
    return (linear / scale).expand(n, 3, 3).clone(), similarity[:3, 3].expand(n, 3).clone(), scale


def _fitted_poses(data: SubjectData, fit: dict[str, np.ndarray]) -> tuple[Tensor, Tensor, float]:
    """Model -> world of every frame from the face model's own per-frame poses (model -> camera):
    ``x_world = w2c^-1 (x_cam / camera_scale)``, ``x_cam = R x + t``."""
    rotation = torch.as_tensor(data.channel("face_model/rotation"), dtype=torch.float32)
    translation = torch.as_tensor(data.channel("face_model/translation"), dtype=torch.float32)
    camera_scale = float(fit["camera_scale"]) if "camera_scale" in fit else 1.0
    w2c = data.w2c.float()
    r_w = w2c[:, :3, :3].transpose(1, 2)
    return (r_w @ rotation, torch.einsum("tij,tj->ti", r_w, translation / camera_scale - w2c[:, :3, 3]),
            1.0 / camera_scale)


def _face_model_file(data: SubjectData) -> dict[str, np.ndarray]:
    """The subject's face_model.npz arrays (identity and camera scale are not per-frame channels)."""
    path = None if data.subject_dir is None else data.subject_dir / FACE_MODEL_FILE
    if path is None or not path.is_file():
        raise TalksplatError(f"subject {data.name} has no {FACE_MODEL_FILE}; run `talksplat prepare` "
                             "(its face-model step writes it)")
    with np.load(path, allow_pickle=False) as npz:
        missing = [k for k in ("identity", "world_from_model") if k not in npz.files]
        if missing:
            raise TalksplatError(f"{path} has no {', '.join(missing)}; re-run `talksplat prepare` to refit the face model")
        return {k: npz[k] for k in npz.files}


def mouth_columns(model: HeadModel) -> list[int]:
    return [i for i, name in enumerate(model.expression_names) if name.startswith(MOUTH_PARAM_PREFIXES)]


def mouth_gram(model: HeadModel, columns: list[int]) -> tuple[Tensor, int]:
    """(G, n): G = B B^T / n over the n vertices the mouth blendshapes B (k, n, 3) move (eq. 2's
    vertices), so that ``d^T G d`` is the mean squared vertex distance of a parameter difference d."""
    basis = torch.from_numpy(model.expression_basis[columns]).double()        # (k, V, 3)
    moved = basis.norm(dim=-1).amax(0) > MOUTH_REGION_MIN_MM
    b = basis[:, moved].reshape(len(columns), -1)
    n = int(moved.sum())
    return (b @ b.T / n).float(), n


def vertex_l2(pred: Tensor, target: Tensor, gram: Tensor) -> Tensor:
    """Eq. 2: mean over frames and mouth-region vertices of the squared distance (mm^2) between the
    mesh of mouth parameters ``pred`` (..., k) and the mesh of ``target`` (every other parameter at the
    neutral template in both, so only the difference matters)."""
    d = (pred - target).reshape(-1, gram.shape[0])
    return torch.einsum("ni,ij,nj->n", d, gram, d).mean()


# ====================================================================================== FlameTalk
def periodic_encoding(positions: Tensor, dim: int, period: int) -> Tensor:
    """FaceFormer's periodic positional encoding: sinusoids of (position mod period), (L,) -> (L, dim)."""
    pos = (positions % period).float()[:, None]
    freq = torch.exp(torch.arange(0, dim, 2).float() * (-math.log(10000.0) / dim))
    enc = torch.zeros(len(positions), dim)
    enc[:, 0::2] = torch.sin(pos * freq)
    enc[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return enc


def causal_bias_mask(length: int, period: int) -> Tensor:
    """(L, L) additive self-attention mask: -inf on future frames, and -floor((i - j) / period) on
    past ones (FaceFormer's biased causal mask: older periods count less)."""
    i = torch.arange(length)[:, None]
    j = torch.arange(length)[None, :]
    bias = -torch.div(i - j, period, rounding_mode="floor").float()
    return bias.masked_fill(j > i, float("-inf"))


def alignment_mask(length: int, frames: int) -> Tensor:
    """(L, L) additive cross-attention mask: frame i sees the audio of frames i - frames + 1 .. i."""
    i = torch.arange(length)[:, None]
    j = torch.arange(length)[None, :]
    allowed = (j <= i) & (j > i - frames)
    return torch.zeros(length, length).masked_fill(~allowed, float("-inf"))


class FlameTalk(nn.Module):
    """Audio windows (B, L, *window) -> jaw/mouth blendshape weights (B, L, k), causal in L."""

    def __init__(self, cfg: FlameTalkConfig, window_shape: tuple[int, ...], outputs: int, style_input: Tensor) -> None:
        super().__init__()
        self.cfg = cfg
        in_dim = int(np.prod(window_shape))
        self.register_buffer("feature_mean", torch.zeros(in_dim))
        self.register_buffer("feature_std", torch.ones(in_dim))
        self.register_buffer("style_input", style_input.float().flatten())
        self.audio_projection = nn.Linear(in_dim, cfg.hidden)
        self.style = nn.Linear(self.style_input.numel(), cfg.hidden)
        layer = nn.TransformerDecoderLayer(cfg.hidden, cfg.heads, cfg.feedforward, dropout=cfg.dropout, batch_first=True,
                                           norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, cfg.layers)
        self.motion_decoder = nn.Linear(cfg.hidden, outputs)
        # Zero weights (as FaceFormer's motion decoder): the untrained model predicts the bias, the mean.
        nn.init.zeros_(self.motion_decoder.weight)
        if cfg.linear_prior:   # raw flattened window -> weights; zero (the bias alone) until fit_prior
            self.register_buffer("prior_weight", torch.zeros(in_dim, outputs))
            self.register_buffer("prior_bias", torch.zeros(outputs))

    @torch.no_grad()
    def fit_statistics(self, windows: Tensor, targets: Tensor) -> None:
        """Standardisation of the audio features and an output bias at the mean target (training frames),
        so the untrained model predicts the mean expression."""
        flat = windows.reshape(len(windows), -1)
        self.feature_mean.copy_(flat.mean(0))
        self.feature_std.copy_(flat.std(0).clamp_min(1e-3))
        self.motion_decoder.bias.copy_(targets.mean(0))

    @torch.no_grad()
    def fit_prior(self, windows: Tensor, targets: Tensor) -> dict:
        """Fits the linear prior (``linear_prior``) on training windows (N, *window) and weights (N, k);
        the motion decoder's bias, the mean until now, becomes 0 (the prior's own bias holds it)."""
        fit = fit_audio_to_lips(windows.cpu().numpy(), targets.cpu().numpy(), max_gain=self.cfg.linear_prior_max_gain)
        weight = fit.weight / fit.x_std[:, None]                     # standardisation folded in
        bias = fit.bias - (fit.x_mean / fit.x_std) @ fit.weight
        self.prior_weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        self.prior_bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
        self.motion_decoder.bias.zero_()
        return {"ridge": fit.ridge, "cv_correlation": [round(float(c), 3) for c in fit.cv_correlation],
                "gain": [round(float(g), 3) for g in fit.gain]}

    def forward(self, windows: Tensor) -> Tensor:
        batch, length = windows.shape[:2]
        flat = windows.reshape(batch, length, -1)
        audio = self.audio_projection((flat - self.feature_mean) / self.feature_std)
        # Positions counted back from the newest frame: a window's last frame always has position 0, so
        # short windows at a clip's start and full ones later are encoded alike.
        positions = torch.arange(length - 1, -1, -1)
        queries = audio + periodic_encoding(positions, self.cfg.hidden, self.cfg.period) + self.style(self.style_input)
        hidden = self.decoder(queries, audio, tgt_mask=causal_bias_mask(length, self.cfg.period),
                              memory_mask=alignment_mask(length, self.cfg.alignment_frames))
        out = self.motion_decoder(hidden)
        if self.cfg.linear_prior:
            out = out + flat @ self.prior_weight + self.prior_bias
        return out


def style_features(model: HeadModel, identity_mesh: Tensor) -> Tensor:
    """The subject's neutral mesh as FlameTalk's style input: its 68 landmark vertices' offsets from the
    model's average face, in cm (a few units)."""
    idx = torch.from_numpy(model.multipie68)
    return (identity_mesh[idx] - torch.from_numpy(model.neutral)[idx]) / 10.0


class FlameTalkConditioner(Conditioner):
    """``{"expression": (53,)}``: FlameTalk's jaw/mouth weights from the audio windows up to the frame,
    the other weights from the pose's source frame (``video``, fine-tuned) or the training median."""

    look_ahead = 0

    def __init__(self, flametalk: FlameTalk, mesh: MeshTracks, columns: list[int], neutral: Tensor,
                 audio_feature: str, source_expressions: Tensor) -> None:
        self.flametalk, self.mesh, self.columns = flametalk, mesh, columns
        self.neutral = neutral
        self.source_expressions = source_expressions      # (n, 53) the frames' expressions for ``video``
        self.audio_feature = audio_feature
        self.look_behind = flametalk.cfg.context_frames - 1

    @torch.no_grad()
    def conditions(self, windows: Tensor, index: int, source_frame: int, expression: str) -> Conditions:
        if expression not in self.expression_modes:
            raise TalksplatError(f"expression must be one of {', '.join(self.expression_modes)} (got {expression!r})")
        context = windows[max(0, index - self.look_behind): index + 1]
        mouth = self.flametalk(context[None])[0, -1].clamp(0.0, 1.0)
        expr = self.source_expressions[source_frame] if expression == "video" else self.neutral
        expr = expr.clone()
        expr[self.columns] = mouth
        return {"expression": expr}


# ====================================================================================== the recipe
class GaussianFlameTalk(Recipe):
    """One mesh-bound Gaussian set, per-frame mesh parameters, and FlameTalk."""

    name = "gaussianflametalk"
    paper = "GaussianFlameTalk: Gaussians rigged to a FLAME mesh driven by an audio-to-expression transformer"
    Config = GaussianFlameTalkConfig
    required_channels = ("frames", "masks", "w2c", "audio", "face_model/expression", "face_model/rotation",
                         "face_model/translation")
    presets: ClassVar[dict[str, dict[str, object]]] = {
        "draft": {"size": 128, "iterations.avatar": 600, "iterations.flametalk": 600},
        "default": {},
        "high": {"size": 512, "iterations.avatar": 10000, "iterations.flametalk": 1500, "max_gaussians": 60_000},
    }
    test_overrides: ClassVar[dict[str, object]] = {
        "size": 64, "head_points": 600, "mouth_points": 60, "refine_every": 4,
        "iterations.avatar": 12, "iterations.flametalk": 4, "flametalk.hidden": 16, "flametalk.heads": 2,
        "flametalk.layers": 1, "flametalk.feedforward": 16, "flametalk.context_frames": 6,
        "flametalk.batch_windows": 2}

    def __init__(self, data: SubjectData, cfg: GaussianFlameTalkConfig, rng: np.random.Generator) -> None:
        super().__init__(data, cfg, rng)
        self.model = load_head_model()
        self.mesh = MeshTracks(data, self.model, cfg.pose_source)
        self.triangles = torch.from_numpy(self.model.triangles)
        _, _, rest_size = triangle_frames(self.mesh.identity_mesh[self.triangles])
        self.rest_size = rest_size.clamp_min(EPS)                        # derived from the model: not saved
        self.mouth_columns = mouth_columns(self.model)
        gram, self.mouth_vertices = mouth_gram(self.model, self.mouth_columns)
        self.mouth_gram = gram                                           # derived from the model: not saved
        self._build_gaussians(rng)
        self.flametalk = self.new_flametalk(cfg.flametalk, fit_prior=not self.weights_from_checkpoint)
        train = torch.as_tensor(data.train_frames)
        self.neutral_expression = self.mesh.tracked[train].median(dim=0).values

    def new_flametalk(self, cfg: FlameTalkConfig, fit_prior: bool = True) -> FlameTalk:
        """An untrained FlameTalk for this subject: feature statistics and the mean from the training
        frames, and (``cfg.linear_prior`` and ``fit_prior``; a checkpoint brings it otherwise) the linear
        prior on their tracked jaw/mouth weights (closed form, a second or two; a clip too short for
        the fit keeps the mean)."""
        train = torch.as_tensor(self.data.train_frames)
        windows, targets = self.data.audio[train], self.mesh.tracked[train][:, self.mouth_columns]
        model = FlameTalk(cfg, tuple(self.data.audio.shape[1:]), len(self.mouth_columns),
                          style_features(self.model, self.mesh.identity_mesh))
        model.fit_statistics(windows, targets)
        if cfg.linear_prior and fit_prior:
            if len(train) < MIN_TRAIN_FRAMES:
                self.flametalk_prior_summary = {"skipped": f"{len(train)} training frames (< {MIN_TRAIN_FRAMES})"}
            else:
                self.flametalk_prior_summary = model.fit_prior(windows, targets)
        return model

    # ---------------------------------------------------------------------------------- seeding
    def _build_gaussians(self, rng: np.random.Generator) -> None:
        data, cfg = self.data, self.cfg
        first = int(data.train_frames[0])
        lip_open = np.asarray(data.lip_open)[data.train_frames]
        widest = int(data.train_frames[int(np.argmax(lip_open))])
        interior = np.concatenate([self.model.region(r) for r in MOUTH_INTERIOR_REGIONS])
        is_interior = np.isin(self.model.triangles, interior).all(axis=1)
        # The neck too: the mesh has one, and drawing it closes the gap a jaw that opens less than the
        # source frame's would leave above the source frame's neck (the backdrop).
        head = self._seed(first, (*FACE_LABELS, HAIR, NECK), cfg.head_points, np.nonzero(~is_interior)[0], rng, True)
        mouth = self._seed(widest, (INSIDE_MOUTH,), cfg.mouth_points, np.nonzero(is_interior)[0], rng, False)
        points, colors, triangle, frame_ids = (torch.cat([a, b]) for a, b in zip(head, mouth))
        depth = float(data.w2c[:, 2, 3].median())
        lrs = GaussianLearningRates(means=cfg.lr_means_px * depth / float(data.K[0, 0]))
        densify = DensifyConfig(max_gaussians=cfg.max_gaussians, refine_every=cfg.refine_every,
                                refine_start=cfg.refine_every * 2, refine_stop=cfg.iterations.avatar * 3 // 4)
        gaussians = GaussianSet(points, colors, lrs, densify, attrs={"triangle": triangle})
        with torch.no_grad():   # to local coordinates before any optimizer step (Adam has no state yet)
            frames = self._frames_at(triangle, frame_ids)
            gaussians.params["means"].copy_(unbind_points(points, frames))
            gaussians.params["log_scales"].sub_(torch.log(frames.scale)[:, None])
        self.sets[SET_NAME] = gaussians

    @torch.no_grad()
    def _frames_at(self, triangle: Tensor, frame_ids: Tensor) -> Frames:
        """Each Gaussian's frame in the (tracked) mesh of the frame it was seeded from."""
        n = len(triangle)
        frames = Frames(torch.zeros(n, 3, 3), torch.zeros(n, 3), torch.ones(n))
        for f in frame_ids.unique().tolist():
            rows = frame_ids == f
            part = self._gaussian_frames(triangle[rows], f, self.mesh.expression(f))
            frames.rotation[rows], frames.origin[rows], frames.scale[rows] = part.rotation, part.origin, part.scale
        return frames

    @torch.no_grad()
    def _seed(self, t: int, labels, n: int, candidates: np.ndarray, rng: np.random.Generator, allow_rigid: bool):
        """``n`` Gaussians on pixels of ``labels`` in frame t: (world points, colours, triangle, frame t).

        Each pixel is bound to the nearest visible candidate triangle (z-buffered centroids), its point
        the pixel back-projected to that triangle's depth; a pixel with no triangle within
        BIND_RADIUS_MM (hair beyond the scalp) is bound to the head frame when ``allow_rigid``."""
        from scipy.spatial import cKDTree

        empty = (torch.zeros(0, 3), torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
        label_map = self.data.labels(t).numpy()
        ys, xs = np.nonzero(np.isin(label_map, labels))
        if n == 0 or len(xs) == 0:
            return empty
        verts = self.mesh.world_vertices(t, self.mesh.expression(t))
        w2c, K = self.data.w2c[t], self.data.K
        centroids = verts[self.triangles[torch.from_numpy(candidates)]].mean(1)
        uv, depth_all = project_points(centroids, w2c, K)
        visible = _zbuffer_visible(uv, depth_all, self.cfg.size)
        uv_v, depth_v, tri_v = uv[visible].numpy(), depth_all[visible].numpy(), candidates[visible.numpy()]
        pick = rng.choice(len(xs), size=n, replace=len(xs) < n)
        px = np.stack([xs[pick], ys[pick]], -1).astype(np.float64) + rng.uniform(0, 1, (n, 2))
        dist, nearest = cKDTree(uv_v).query(px)
        depth = depth_v[nearest]
        bound = dist * depth / float(K[0, 0]) <= BIND_RADIUS_MM
        if not allow_rigid:
            bound[:] = True
        kn = K.numpy()
        x_cam = np.stack([(px[:, 0] - kn[0, 2]) / kn[0, 0] * depth, (px[:, 1] - kn[1, 2]) / kn[1, 1] * depth, depth], -1)
        c2w = torch.linalg.inv(w2c).numpy()
        world = torch.tensor(x_cam @ c2w[:3, :3].T + c2w[:3, 3], dtype=torch.float32)
        triangle = torch.from_numpy(np.where(bound, tri_v[nearest], RIGID)).long()
        colors = self.data.image(t)[torch.from_numpy(ys[pick]), torch.from_numpy(xs[pick])]
        return world, colors.float(), triangle, torch.full((n,), t, dtype=torch.long)

    # ---------------------------------------------------------------------------------- structure
    def stages(self) -> list[Stage]:
        it = self.cfg.iterations
        return [Stage("avatar", it.avatar, trains=("gaussians", "networks.mesh_expression", "networks.mesh_pose"),
                      densify=True, deform=True),
                Stage("flametalk", it.flametalk, trains=("networks.flametalk",), deform=True)]

    def network_param_groups(self) -> list[dict]:
        cfg, mesh = self.cfg, self.mesh
        return [{"name": "mesh_expression", "params": [mesh.expression_offset], "lr": cfg.lr_mesh_expression},
                {"name": "mesh_pose", "params": [mesh.rotation_offset, mesh.translation_offset, mesh.log_scale_offset],
                 "lr": cfg.lr_mesh_pose},
                {"name": "flametalk", "params": list(self.flametalk.parameters()), "lr": cfg.flametalk.lr}]

    # ---------------------------------------------------------------------------------- conditions
    def conditions(self, frame: int) -> Conditions:
        """Self-reenactment from the subject's own recording: FlameTalk's jaw/mouth weights from the
        recorded audio up to frame t, the frame's other (fine-tuned) weights."""
        windows = self.data.audio[max(0, frame - self.cfg.flametalk.context_frames + 1): frame + 1]
        return self.conditioner().conditions(windows, len(windows) - 1, frame, "video")

    def training_conditions(self, frame: int, stage: Stage) -> Conditions:
        """Avatar stage: the frame's tracked expression plus its learned offset (teacher-forced mesh), and
        the frame's learned pose correction."""
        return {"expression": self.mesh.expression(frame), CORRECTED_POSE: torch.ones(())}

    def conditioner(self) -> FlameTalkConditioner:
        keep = [i for i, name in enumerate(self.model.expression_names) if name.startswith(EXPRESSION_UNSMOOTHED)]
        source = self.mesh.smoothed_expressions(self.cfg.render_expression_sigma, keep)
        return FlameTalkConditioner(self.flametalk, self.mesh, self.mouth_columns, self.neutral_expression,
                                    self.cfg.audio_feature, source)

    # ---------------------------------------------------------------------------------- rendering
    def _gaussian_frames(self, triangle: Tensor, frame: int, expression: Tensor, corrected: bool = True) -> Frames:
        """Every Gaussian's local -> world frame in frame ``frame``'s mesh of ``expression``."""
        rotation, translation, scale = self.mesh.head_frame(frame, corrected)
        verts = scale * self.mesh.model_vertices(expression) @ rotation.T + translation
        bound = triangle >= 0
        tri = triangle.clamp_min(0)
        tri_rotation, centroid, size = triangle_frames(verts[self.triangles[tri]])
        relative = size / self.rest_size[tri]
        return Frames(torch.where(bound[:, None, None], tri_rotation, rotation.expand_as(tri_rotation)),
                      torch.where(bound[:, None], centroid, translation.expand_as(centroid)),
                      torch.where(bound, relative, scale.expand_as(relative)))

    def posed_gaussians(self, frame: int, expression: Tensor, corrected: bool = True) -> dict[str, Tensor]:
        gaussians = self.sets[SET_NAME]
        frames = self._gaussian_frames(gaussians.attrs["triangle"], frame, expression, corrected)
        return bind(dict(gaussians.params.items()), frames)

    @torch.no_grad()
    def canonical_gaussians(self) -> dict[str, dict[str, Tensor]]:
        """The neutral template's Gaussians posed like the first training frame, in world coordinates
        (the set's own parameters are relative to mesh triangles)."""
        first = int(self.data.train_frames[0])
        posed = self.posed_gaussians(first, torch.zeros(self.model.num_expressions), corrected=False)
        return {SET_NAME: {k: v.detach().clone() for k, v in posed.items()}}

    def forward(self, view: View, conditions: Conditions | None, stage: Stage | None = None) -> dict:
        size, K = self.cfg.size, self.data.K
        w2c, backdrop = self.view_inputs(view)
        if stage is not None and stage.name == "flametalk":
            # Only FlameTalk trains here and no pixel depends on it: skip the render (its loss reads the
            # audio and the fine-tuned mesh parameters). The image is the backdrop, for the step's log.
            zero = torch.zeros(size, size, 1)
            return {"image": backdrop, "alpha": zero, "head": backdrop * zero, "metas": {}}
        # None: the undeformed avatar, i.e. the neutral template (all blendshapes 0) in the frame's pose.
        expression = torch.zeros(self.model.num_expressions) if conditions is None else conditions["expression"]
        # The learned pose corrections align the training frames with their images (absorbing tracking
        # error); rendering (self-reenactment, new audio) poses the head by the cameras alone unless
        # render_pose_corrections: the corrections reproduce each source frame's residual, which wobbled.
        corrected = self.cfg.render_pose_corrections or (conditions is not None and CORRECTED_POSE in conditions)
        out = rasterize(*self.posed_gaussians(view.frame, expression, corrected).values(), w2c, K, size, size,
                        with_depth=False)
        return {"image": out.image + (1.0 - out.alpha) * backdrop, "alpha": out.alpha, "head": out.image,
                "metas": {SET_NAME: out.meta}}

    # ---------------------------------------------------------------------------------- training
    def losses(self, outputs: dict, batch: Batch, stage: Stage) -> dict[str, Tensor]:
        if stage.name == "flametalk":
            return {"flametalk": self._flametalk_loss(batch.frame)}
        image, target = outputs["image"], batch.image
        terms = {"l1": (image - target).abs().mean(), "dssim": 1 - ssim(image, target)}
        if self.cfg.losses.mouth_box > 0:
            terms["mouth_box"] = mouth_box_l1(image, target, self.data.labels(batch.frame))
        terms["binding"] = self._binding_loss()
        terms["expression_reg"] = self.mesh.expression_offset[batch.frame].pow(2).mean()
        terms["pose_reg"] = self._pose_reg(batch.frame)
        terms["pose_smooth"] = self._pose_smooth(batch.frame)
        return terms

    def _binding_loss(self) -> Tensor:
        gaussians = self.sets[SET_NAME]
        bound = (gaussians.attrs["triangle"] >= 0).float()[:, None]
        offset = F.relu(gaussians.params["means"].norm(dim=-1, keepdim=True) - self.cfg.binding_free_offset_mm)
        scale = F.relu(gaussians.params["log_scales"].exp() - self.cfg.binding_free_scale_mm)
        return (bound * (offset + scale)).mean()

    def _pose_offsets(self, frame: int) -> Tensor:
        """Frame ``frame``'s pose correction as one vector in comparable units (deg, mm, log-scale x 100)."""
        mesh = self.mesh
        return torch.cat([mesh.rotation_offset[frame] * POSE_REG_DEGREES,
                          mesh.translation_offset[frame] * POSE_TRANSLATION_UNIT,
                          mesh.log_scale_offset[frame] * POSE_REG_LOG_SCALE])

    def _pose_reg(self, frame: int) -> Tensor:
        """Small pose corrections."""
        return self._pose_offsets(frame).pow(2).mean()

    def _pose_smooth(self, frame: int) -> Tensor:
        """Smooth pose corrections: their second difference with the neighbouring frames. Without it each
        frame's correction is fitted on its own (from the ~10 steps that sample it) and the driven renders
        wobble: German anchor, stability 0.256 with independent corrections vs 0.158 with none (TG 0.162)."""
        last = self.data.n_frames - 1
        neighbours = (self._pose_offsets(max(frame - 1, 0)) + self._pose_offsets(min(frame + 1, last))) / 2
        return (self._pose_offsets(frame) - neighbours).pow(2).mean()

    def _flametalk_loss(self, frame: int) -> Tensor:
        """Eq. 2 over ``batch_windows`` windows: the engine's frame and more drawn from the recipe's
        generator (checkpointed, so a resumed run draws the same)."""
        cfg = self.cfg.flametalk
        extra = self.rng.choice(self.data.train_frames, size=cfg.batch_windows - 1)
        targets = (self.mesh.tracked + self.mesh.expression_offset.detach()).clamp(0.0, 1.0)[:, self.mouth_columns]
        losses = []
        for t in (frame, *map(int, extra)):
            start = max(0, t - cfg.context_frames + 1)
            pred = self.flametalk(self.data.audio[start:t + 1][None])[0]
            losses.append(vertex_l2(pred, targets[start:t + 1], self.mouth_gram))
        return torch.stack(losses).mean()

    # ---------------------------------------------------------------------------------- reporting
    @torch.no_grad()
    def mouth_vertex_errors(self, frames: np.ndarray) -> dict[str, float]:
        """Held-out FlameTalk error: RMS vertex distance (mm) over the mouth region between the mesh of
        the predicted and of the tracked jaw/mouth weights, and the same for the training mean."""
        cols, context = self.mouth_columns, self.cfg.flametalk.context_frames
        targets = self.mesh.tracked[:, cols]
        preds = torch.stack([self.flametalk(self.data.audio[max(0, t - context + 1):t + 1][None])[0, -1].clamp(0, 1)
                             for t in map(int, frames)])
        mean = self.mesh.tracked[torch.as_tensor(self.data.train_frames)][:, cols].mean(0).expand_as(preds)
        truth = targets[torch.as_tensor(frames)]
        return {"flametalk_mm": math.sqrt(float(vertex_l2(preds, truth, self.mouth_gram))),
                "mean_expression_mm": math.sqrt(float(vertex_l2(mean, truth, self.mouth_gram)))}

    def summary_extras(self) -> dict:
        gaussians = self.sets[SET_NAME]
        extras = {"rigid_gaussians": int((gaussians.attrs["triangle"] < 0).sum()),
                  "mouth_region_vertices": self.mouth_vertices}
        if hasattr(self, "flametalk_prior_summary"):     # fitted in this process (not loaded)
            extras["flametalk_linear_prior"] = self.flametalk_prior_summary
        if len(self.data.val_frames):
            extras["held_out_mouth_vertex_rms"] = {k: round(v, 3) for k, v in
                                                   self.mouth_vertex_errors(self.data.val_frames).items()}
        return extras


# ====================================================================================== helpers
def _zbuffer_visible(uv: Tensor, depth: Tensor, size: int) -> Tensor:
    """Which projected points (N, 2 px) are within ZBUFFER_TOLERANCE_MM of the nearest point in their
    ZBUFFER_CELL_PX cell (and inside the image, in front of the camera)."""
    cells = size // ZBUFFER_CELL_PX + 1
    inside = (uv >= 0).all(-1) & (uv < size).all(-1) & (depth > 0)
    cell = (uv.clamp(0, size - 1) // ZBUFFER_CELL_PX).long()
    index = cell[:, 1] * cells + cell[:, 0]
    nearest = torch.full((cells * cells,), math.inf).scatter_reduce(
        0, index[inside], depth[inside], reduce="amin")
    return inside & (depth <= nearest[index] + ZBUFFER_TOLERANCE_MM)
