"""Parts several recipes compose that are not general enough for the layers below: seeding Gaussians
from a subject's frames (TalkingGaussian, SyncTalk++) and the head-pose condition (UniGS, SyncTalk++).
Also: regions of Gaussians near landmarks of the canonical face template (TalkingGaussian's mouth
opacity, UniGS's pose-free face). Recipes import from here, never from one another."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from talksplat.core.labels import HEAD_LABELS, INSIDE_MOUTH
from talksplat.core.landmarks import LEFT_EYE, LIP_POINTS, RIGHT_EYE
from talksplat.core.pixels import RASTER_PIXEL_CENTRE
from talksplat.data.subject import SubjectData
from talksplat.features.expression import CORE_NAMES
from talksplat.features.lipstate import LipBasis
from talksplat.fields.landmark_rig import LandmarkRig
from talksplat.gaussians.rasterize import project_points

MOUTH_DEPTH_BEHIND_LIPS_MM = 8.0  # the mouth interior starts a little behind the lip surface
# Head pose condition: the camera's rotation (9 entries) and translation (3) in the head frame.
POSE_DIM = 12
# Pose entries are standardised by their spread over the training frames; entries that barely vary
# (a still camera axis) are divided by at least this much, so noise is not blown up.
POSE_STD_FLOOR = {"rotation": 1e-3, "translation": 1e-1}
# Landmark groups of the canonical template that name regions of the face (FaceMesh indices).
FACE_REGIONS = {"lips": LIP_POINTS, "eyes": RIGHT_EYE + LEFT_EYE}


# ------------------------------------------------------------------------------------ seeding
def seed_points(data: SubjectData, n_face: int, n_mouth: int, rng: np.random.Generator):
    """Back-projects head pixels of a training frame to 3D using the fitted template's depth.

    The face template (in the head/world frame, mm) is projected into the frame; pixel depths are
    interpolated from its vertices (nearest outside the face, so hair sits at the face's edge
    depth). Inside-mouth points come from the frame with the widest lip opening, a little behind
    the lips. Returns (face_points [n,3], face_colors [n,3], mouth_points, mouth_colors).
    """
    from talksplat.tracking.template import load_canonical_template

    template = torch.tensor(load_canonical_template().vertices, dtype=torch.float32)
    first = int(data.train_frames[0])
    widest = int(data.train_frames[np.argmax(data.lip_open[data.train_frames])])
    face = _backproject(data, first, template, HEAD_LABELS[:-1], n_face, rng, depth_offset=0.0)
    mouth = _backproject(data, widest, template, (INSIDE_MOUTH,), n_mouth, rng,
                         depth_offset=MOUTH_DEPTH_BEHIND_LIPS_MM)
    return (*face, *mouth)


def _backproject(data: SubjectData, t: int, template: Tensor, labels, n: int, rng, depth_offset: float):
    from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator

    w2c = data.w2c[t]
    uv, depth = project_points(template, w2c, data.K)
    label_map = data.labels(t).numpy()
    ys, xs = np.nonzero(np.isin(label_map, labels))
    if len(xs) == 0:  # e.g. a closed mouth everywhere: seed at the template's mouth region
        ys, xs = np.nonzero(label_map == label_map[int(uv[13, 1]), int(uv[13, 0])])
    pick = rng.choice(len(xs), size=n, replace=len(xs) < n)
    px = np.stack([xs[pick], ys[pick]], -1).astype(np.float64) + rng.uniform(0, 1, (n, 2))
    linear = LinearNDInterpolator(uv.numpy(), depth.numpy())
    nearest = NearestNDInterpolator(uv.numpy(), depth.numpy())
    z = linear(px)
    z = np.where(np.isnan(z), nearest(px), z) + depth_offset
    K = data.K.numpy()
    x_cam = np.stack([(px[:, 0] - K[0, 2]) / K[0, 0] * z, (px[:, 1] - K[1, 2]) / K[1, 1] * z, z], -1)
    c2w = torch.linalg.inv(w2c).numpy()
    world = x_cam @ c2w[:3, :3].T + c2w[:3, 3]
    colors = data.image(t).numpy()[ys[pick], xs[pick]]
    return torch.tensor(world, dtype=torch.float32), torch.tensor(colors, dtype=torch.float32)


# ------------------------------------------------------------------------------------ head pose
def pose_vector(w2c: Tensor) -> Tensor:
    """(..., 4, 4) camera -> (..., 12): rotation entries then translation."""
    return torch.cat([w2c[..., :3, :3].flatten(-2), w2c[..., :3, 3]], dim=-1)


def pose_statistics(w2c: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and (floored) std of :func:`pose_vector` over frames (T, 4, 4)."""
    poses = pose_vector(w2c.float())
    floor = torch.tensor([POSE_STD_FLOOR["rotation"]] * 9 + [POSE_STD_FLOOR["translation"]] * 3)
    return poses.mean(0), torch.maximum(poses.std(0), floor)


# ------------------------------------------------------------------------------------ face regions
def template_anchors(regions: tuple[str, ...] = ("lips",)) -> Tensor:
    """The canonical template's landmarks of the named :data:`FACE_REGIONS`, in the head frame (mm) [K, 3]."""
    unknown = sorted(set(regions) - set(FACE_REGIONS))
    if unknown:
        raise ValueError(f"unknown face regions {unknown}; use some of {sorted(FACE_REGIONS)}")
    return template_anchors_of(tuple(i for name in regions for i in FACE_REGIONS[name]))


def template_anchors_of(points: tuple[int, ...]) -> Tensor:
    """The canonical template's landmarks ``points`` (FaceMesh indices), in the head frame (mm) [K, 3]."""
    from talksplat.tracking.template import load_canonical_template

    return torch.tensor(load_canonical_template().vertices[list(points)], dtype=torch.float32)


def near(points: Tensor, anchors: Tensor, radius: float) -> Tensor:
    """[N] 1.0 where a point lies within ``radius`` of any anchor, else 0.0 (no gradient)."""
    with torch.no_grad():
        anchors = anchors.to(points.device)
        return (torch.cdist(points.detach(), anchors).min(dim=1).values <= radius).to(points.dtype)


class RegionGate:
    """[N] per-Gaussian gate of a condition: 0 for the points within ``radius`` of any anchor (the
    region does not see the condition), 1 elsewhere; :meth:`inside` gives the region itself.

    Rendering asks every frame with the same canonical means (3.8 ms for 34k Gaussians on one
    thread): the region is kept until the tensor changes, keyed as MotionField's inference cache is.
    """

    def __init__(self, anchors: Tensor, radius: float) -> None:
        self.anchors, self.radius = anchors, radius
        self._cache: tuple[tuple, Tensor, Tensor] | None = None

    def __call__(self, means: Tensor) -> Tensor:
        return self._cached(means)[2]

    def inside(self, means: Tensor) -> Tensor:
        """[N] 1.0 for the points within ``radius`` of any anchor, else 0.0."""
        return self._cached(means)[1]

    def _cached(self, means: Tensor) -> tuple[tuple, Tensor, Tensor]:
        key = (means.data_ptr(), means._version, tuple(means.shape), means.device)
        if self._cache is None or self._cache[0] != key:
            region = near(means, self.anchors, self.radius)
            self._cache = (key, region, 1.0 - region)
        return self._cache


def landmark_offsets(data: SubjectData, anchors: Tensor, indices) -> Tensor:
    """[K, 2] median over the training frames of (tracked landmark - projected template anchor), in
    pixels: how far the subject's face lies from the template's at those landmarks."""
    rows, K = [], data.K.cpu()
    for t in np.asarray(data.train_frames):
        projected = project_points(anchors, data.w2c[int(t)].cpu(), K)[0].numpy()
        rows.append(data.landmarks_px(int(t))[list(indices)] + RASTER_PIXEL_CENTRE - projected)
    offsets = np.nanmedian(np.stack(rows), axis=0)
    return torch.tensor(np.nan_to_num(offsets), dtype=torch.float32)


# ------------------------------------------------------------------------------------ landmark rigs
def _tracked_in_head_frame(data: SubjectData, points: tuple[int, ...],
                           template: Tensor) -> tuple[Tensor, list[int]]:
    """[T, K, 3] float64 tracked landmarks ``points`` of the training frames in the head frame (mm),
    back-projected at the depth of the canonical ``template`` landmarks [K, 3] in each frame's camera,
    and the T frames they come from (frames with a landmark lost are left out)."""
    template, K = template.double(), data.K.cpu().double()
    focal, centre = torch.stack([K[0, 0], K[1, 1]]), K[:2, 2]
    positions, keep = [], []
    for t in np.asarray(data.train_frames):
        tracked = torch.as_tensor(data.landmarks_px(int(t))[list(points)] + RASTER_PIXEL_CENTRE, dtype=torch.float64)
        if not bool(torch.isfinite(tracked).all()):
            continue
        w2c = data.w2c[int(t)].cpu().double()
        _, depth = project_points(template, w2c, K)
        camera = torch.cat([(tracked - centre) / focal * depth[:, None], depth[:, None]], dim=1)
        positions.append((camera - w2c[:3, 3]) @ w2c[:3, :3])
        keep.append(int(t))
    return torch.stack(positions), keep


def _linear_fit(positions: Tensor, states: Tensor) -> tuple[Tensor, Tensor]:
    """Least squares ``positions [T, K, 3] ~ anchors [K, 3] + states [T, S] @ basis [S, K, 3]``."""
    T, K = positions.shape[:2]
    design = torch.cat([torch.ones(T, 1, dtype=torch.float64), states.double()], dim=1)
    fit = torch.linalg.lstsq(design, positions.reshape(T, -1)).solution                    # [1 + S, K*3]
    return fit[0].reshape(K, 3), fit[1:].reshape(len(fit) - 1, K, 3)


def lip_rig(data: SubjectData, lip_basis: LipBasis, sigma_mm: float, reach_mm: float) -> LandmarkRig:
    """A :class:`LandmarkRig` moving the subject's 40 lip landmarks (head frame, mm) with the lip-state
    coefficients of ``lip_basis`` (features.lipstate).

    Each training frame's tracked lip landmarks are put in the head frame (back-projected at the depth
    of the canonical template's lip landmarks in that frame's camera); anchors and basis are the
    least-squares fit ``positions ~ anchors + states @ basis`` over the training frames. A fit, not
    the basis's shape axes mapped to mm, because the lip shapes are centred: alone they would open
    the mouth by lifting the upper lip as far as the lower one drops.
    """
    # All in float64, rounded at the end: float32 results' last bits follow the memory layout (BLAS,
    # LAPACK), and a run resumed from a checkpoint must continue bit for bit.
    positions, keep = _tracked_in_head_frame(data, LIP_POINTS, template_anchors(("lips",)))
    states = torch.as_tensor(lip_basis.coefficients(data.lip_shapes[keep]), dtype=torch.float64)
    anchors, basis = _linear_fit(positions, states)
    return LandmarkRig(anchors.float(), basis.float(), sigma_mm, reach_mm)


# The eyes of FACE_REGIONS["eyes"] (right, then left) and the column of each one's blink coefficient
# among the expression coefficients.
LID_RIG_EYES = ((RIGHT_EYE, CORE_NAMES.index("eyeBlinkRight")), (LEFT_EYE, CORE_NAMES.index("eyeBlinkLeft")))


def lid_rig(data: SubjectData, sigma_mm: float, reach_mm: float) -> LandmarkRig:
    """A :class:`LandmarkRig` moving each eye's 16 landmarks (head frame, mm) with that eye's blink
    coefficient - the states are the frame's expression coefficients, the other columns' basis zero.

    Fitted as :func:`lip_rig` is, one eye at a time: both eyes blink together, and a joint fit on two
    nearly equal columns could move one eye by the difference of large opposite terms.
    """
    states_dim = data.expressions.shape[1]
    anchors, basis = [], []
    for points, column in LID_RIG_EYES:
        positions, keep = _tracked_in_head_frame(data, points, template_anchors_of(points))
        blink = data.expressions[keep][:, column:column + 1].double()
        eye_anchors, eye_basis = _linear_fit(positions, blink)
        full = torch.zeros(states_dim, len(points), 3, dtype=torch.float64)
        full[column] = eye_basis[0]
        anchors.append(eye_anchors)
        basis.append(full)
    return LandmarkRig(torch.cat(anchors).float(), torch.cat(basis, dim=1).float(), sigma_mm, reach_mm)


def placeholder_lid_rig(states_dim: int, sigma_mm: float, reach_mm: float) -> LandmarkRig:
    """A lid rig of the right shape for a checkpoint to fill."""
    n = len(RIGHT_EYE) + len(LEFT_EYE)
    return LandmarkRig(torch.zeros(n, 3), torch.zeros(states_dim, n, 3), sigma_mm, reach_mm)


def placeholder_lip_rig(lip_dims: int, sigma_mm: float, reach_mm: float) -> LandmarkRig:
    """A rig of the right shape for a checkpoint to fill (its buffers are saved with the weights)."""
    return LandmarkRig(torch.zeros(len(LIP_POINTS), 3), torch.zeros(lip_dims, len(LIP_POINTS), 3), sigma_mm, reach_mm)
