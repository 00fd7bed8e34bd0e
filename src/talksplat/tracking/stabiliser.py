"""Head-Sync Stabilizer (after SyncTalk++ Sec. III-C): landmark poses refined with optical-flow keypoints.

Per-frame PnP on MediaPipe landmarks shakes: each frame's landmarks carry ~1 px of independent
noise. Optical flow between consecutive frames is far more consistent, so we

1. seed keypoints on the face where the Laplacian of the image the flow is computed on is
   significant (flat skin gives ill-conditioned flow), track them with pyramidal Lucas-Kanade
   with a forward-backward check, and re-seed when too many are lost;
2. attach each keypoint to the head: barycentric coordinates in the landmark mesh triangle it
   falls in, at its first frame, give its initial head-frame 3D position, and the mesh vertices'
   semantic weights give its weight (eyes, brows, lips and jaw move on their own: down-weighted);
3. bundle-adjust in two stages: (a) keypoint 3D positions only, poses fixed at the landmark fit;
   (b) poses and keypoint positions jointly (alternating pose and point updates), with the
   landmarks kept in the cost at a lower weight to anchor scale and gauge to the metric template.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from talksplat.core.landmarks import FACE_OVAL
from talksplat.tracking.pose import (
    Observations,
    group_sum_matrix,
    huber_weights,
    refine_poses,
    reprojection_errors,
    residuals_and_jacobians,
)
from talksplat.tracking.template import FaceTemplate

# Keypoint selection and tracking (sizes are for a 512 px crop; scaled with the crop size).
REFERENCE_SIZE = 512
MAX_KEYPOINTS = 160
RESEED_FRACTION = 0.7            # re-seed when fewer than this fraction of MAX_KEYPOINTS survive
CORNER_QUALITY = 0.005
MIN_KEYPOINT_DISTANCE_PX = 8.0
LAPLACIAN_SIGMA_PX = 1.5
LAPLACIAN_MIN_RATIO = 1.0        # keep keypoints whose |LoG| >= this times the face's median |LoG|
LK_WINDOW_PX = 21
LK_LEVELS = 3
FORWARD_BACKWARD_MAX_PX = 0.5
FACE_ERODE_PX = 6                # keypoints stay this far inside the face outline (the silhouette slides)
MIN_TRACK_LENGTH = 3

# Bundle adjustment.
LANDMARK_WEIGHT = 1.0
KEYPOINT_WEIGHT = 4.0            # LK is ~5x less noisy than landmarks, but can drift: a moderate weight
KEYPOINT_HUBER_PX = 1.0
POINT_PRIOR_WEIGHT = 1e-3        # per mm^2: keeps depth (poorly seen under small rotations) near the mesh
POINT_ITERS = 4
JOINT_ROUNDS = 3
POSE_ITERS_PER_ROUND = 2


@dataclass
class KeypointTracks:
    """Optical-flow tracks: M observations sorted by frame.

    frame (M,), track (M,), uv (M, 2); per track: points0 (P, 3) head-frame initial positions,
    weight (P,) semantic weights.
    """

    frame: np.ndarray
    track: np.ndarray
    uv: np.ndarray
    points0: np.ndarray
    weight: np.ndarray

    @property
    def num_tracks(self) -> int:
        return int(self.points0.shape[0])


@dataclass
class StabiliserResult:
    rotation: np.ndarray            # (T, 3, 3)
    translation: np.ndarray         # (T, 3)
    tracks: KeypointTracks
    points: np.ndarray              # (P, 3) refined keypoint head-frame positions
    keypoint_error_px: float        # weighted mean keypoint reprojection error after refinement
    landmark_error_px: float        # weighted mean landmark reprojection error after refinement


def _scaled(px: float, size: int) -> float:
    return px * size / REFERENCE_SIZE


def face_region(landmarks_uv: np.ndarray, shape: tuple[int, int], erode_px: float) -> np.ndarray:
    """uint8 mask (H, W) of the face-oval polygon, eroded by ``erode_px``."""
    mask = np.zeros(shape, dtype=np.uint8)
    poly = np.round(landmarks_uv[list(FACE_OVAL), :2] * 16).astype(np.int32)
    cv2.fillPoly(mask, [poly], 255, lineType=cv2.LINE_8, shift=4)
    k = max(round(erode_px), 1)
    return cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))


def select_keypoints(gray: np.ndarray, region: np.ndarray, existing: np.ndarray, count: int) -> np.ndarray:
    """New keypoints (K, 2) in ``region``, away from ``existing`` (E, 2), with a strong |LoG|."""
    if count <= 0:
        return np.zeros((0, 2), np.float32)
    size = gray.shape[0]
    min_dist = _scaled(MIN_KEYPOINT_DISTANCE_PX, size)
    mask = region.copy()
    for x, y in existing:
        cv2.circle(mask, (round(x), round(y)), round(min_dist), 0, -1)
    corners = cv2.goodFeaturesToTrack(gray, maxCorners=count * 2, qualityLevel=CORNER_QUALITY,
                                      minDistance=min_dist, mask=mask)
    if corners is None:
        return np.zeros((0, 2), np.float32)
    corners = corners.reshape(-1, 2)
    blurred = cv2.GaussianBlur(gray.astype(np.float32), (0, 0), _scaled(LAPLACIAN_SIGMA_PX, size))
    log = np.abs(cv2.Laplacian(blurred, cv2.CV_32F))
    face_median = float(np.median(log[region > 0])) if (region > 0).any() else 0.0
    xi = np.clip(np.round(corners[:, 0]).astype(int), 0, gray.shape[1] - 1)
    yi = np.clip(np.round(corners[:, 1]).astype(int), 0, gray.shape[0] - 1)
    score = log[yi, xi]
    keep = score >= LAPLACIAN_MIN_RATIO * face_median
    corners, score = corners[keep], score[keep]
    return corners[np.argsort(-score)[:count]].astype(np.float32)


def track_keypoints(gray_frames: Sequence[np.ndarray] | Callable[[int], np.ndarray], num_frames: int,
                    landmarks_uv: np.ndarray, progress: Callable[[int], None] | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Track face keypoints through the clip with pyramidal LK and a forward-backward check.

    Args:
        gray_frames: a sequence (or a function of the frame index) of (S, S) uint8 frames.
        landmarks_uv: (T, 478, 2) landmarks in the same pixels (they define the face region).
    Returns:
        frame (M,), track (M,), uv (M, 2) float32, sorted by frame.
    """
    get = gray_frames if callable(gray_frames) else gray_frames.__getitem__
    prev = get(0)
    size = prev.shape[0]
    erode = _scaled(FACE_ERODE_PX, size)
    lk = {"winSize": (LK_WINDOW_PX, LK_WINDOW_PX), "maxLevel": LK_LEVELS,
              "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01)}
    pts = select_keypoints(prev, face_region(landmarks_uv[0], prev.shape, erode), np.zeros((0, 2)), MAX_KEYPOINTS)
    ids = np.arange(pts.shape[0])
    next_id = int(ids.size)
    frames, tracks, uvs = [np.zeros(ids.size, int)], [ids], [pts]
    for t in range(1, num_frames):
        cur = get(t)
        region = face_region(landmarks_uv[t], cur.shape, erode)
        if pts.shape[0]:
            fwd, st1, _ = cv2.calcOpticalFlowPyrLK(prev, cur, pts.reshape(-1, 1, 2), None, **lk)
            bwd, st2, _ = cv2.calcOpticalFlowPyrLK(cur, prev, fwd, None, **lk)
            fwd, bwd = fwd.reshape(-1, 2), bwd.reshape(-1, 2)
            fb = np.linalg.norm(bwd - pts, axis=1)
            xi = np.clip(np.round(fwd[:, 0]).astype(int), 0, size - 1)
            yi = np.clip(np.round(fwd[:, 1]).astype(int), 0, size - 1)
            ok = (st1.ravel() == 1) & (st2.ravel() == 1) & (fb < FORWARD_BACKWARD_MAX_PX) & (region[yi, xi] > 0)
            pts, ids = fwd[ok], ids[ok]
        if pts.shape[0] < RESEED_FRACTION * MAX_KEYPOINTS:
            new = select_keypoints(cur, region, pts, MAX_KEYPOINTS - pts.shape[0])
            pts = np.concatenate([pts, new]).astype(np.float32)
            ids = np.concatenate([ids, np.arange(next_id, next_id + new.shape[0])])
            next_id += new.shape[0]
        frames.append(np.full(ids.size, t))
        tracks.append(ids.copy())
        uvs.append(pts.copy())
        prev = cur
        if progress is not None:
            progress(1)
    return np.concatenate(frames), np.concatenate(tracks), np.concatenate(uvs).astype(np.float32)


def barycentric_lift(points_uv: np.ndarray, landmarks_uv: np.ndarray, template: FaceTemplate,
                     rotation: np.ndarray, translation: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Head-frame positions of image points via the landmark mesh of one frame.

    Args:
        points_uv: (P, 2); landmarks_uv: (478, 2) of the same frame; rotation (3, 3), translation (3,)
        that frame's pose (to pick the front-most triangle where the 2D mesh folds).
    Returns:
        points (P, 3), weights (P,), inside (P,) bool (False: the point is in no triangle).
    """
    tri = template.triangles
    a, b, c = (landmarks_uv[tri[:, k], :2].astype(np.float64) for k in range(3))
    v0, v1 = b - a, c - a                                       # (F, 2)
    det = v0[:, 0] * v1[:, 1] - v0[:, 1] * v1[:, 0]
    det = np.where(np.abs(det) < 1e-9, np.nan, det)
    d = points_uv[:, None, :] - a[None]                         # (P, F, 2)
    l1 = (d[..., 0] * v1[None, :, 1] - d[..., 1] * v1[None, :, 0]) / det[None]
    l2 = (v0[None, :, 0] * d[..., 1] - v0[None, :, 1] * d[..., 0]) / det[None]
    l0 = 1.0 - l1 - l2
    eps = -1e-6
    inside = (l0 >= eps) & (l1 >= eps) & (l2 >= eps)
    verts = template.vertices
    p3 = (l0[..., None] * verts[tri[:, 0]][None] + l1[..., None] * verts[tri[:, 1]][None]
          + l2[..., None] * verts[tri[:, 2]][None])             # (P, F, 3)
    depth = np.einsum("j,pfj->pf", rotation[2], p3) + translation[2]
    depth = np.where(inside, depth, np.inf)
    best = np.argmin(depth, axis=1)
    rows = np.arange(points_uv.shape[0])
    found = np.isfinite(depth[rows, best])
    w = template.weights
    weight = (l0[rows, best] * w[tri[best, 0]] + l1[rows, best] * w[tri[best, 1]]
              + l2[rows, best] * w[tri[best, 2]])
    return p3[rows, best], np.where(found, weight, 0.0), found


def lift_tracks(frame: np.ndarray, track: np.ndarray, uv: np.ndarray, landmarks_uv: np.ndarray,
                template: FaceTemplate, rotation: np.ndarray, translation: np.ndarray) -> KeypointTracks:
    """Attach each track to the head at its first frame; drop short tracks and points off the mesh."""
    num = int(track.max()) + 1 if track.size else 0
    first = np.full(num, -1)
    order = np.argsort(frame, kind="stable")
    # The first observation of each track (observations are in frame order).
    _, first_obs = np.unique(track[order], return_index=True)
    first_obs = order[first_obs]
    lengths = np.bincount(track, minlength=num)
    points0 = np.zeros((num, 3))
    weight = np.zeros(num)
    ok = np.zeros(num, bool)
    first[track[first_obs]] = frame[first_obs]
    for t in np.unique(first[first >= 0]):
        sel = first_obs[frame[first_obs] == t]
        p, w, inside = barycentric_lift(uv[sel].astype(np.float64), landmarks_uv[t], template,
                                        rotation[t], translation[t])
        ids = track[sel]
        points0[ids], weight[ids], ok[ids] = p, w, inside
    ok &= lengths >= MIN_TRACK_LENGTH
    remap = np.full(num, -1)
    remap[ok] = np.arange(int(ok.sum()))
    keep = ok[track]
    return KeypointTracks(frame=frame[keep], track=remap[track[keep]], uv=uv[keep].astype(np.float64),
                          points0=points0[ok], weight=weight[ok])


def _keypoint_observations(tracks: KeypointTracks, points: np.ndarray) -> Observations:
    return Observations(tracks.frame, points[tracks.track], tracks.uv,
                        KEYPOINT_WEIGHT * tracks.weight[tracks.track])


def refine_points(tracks: KeypointTracks, points: np.ndarray, rotation: np.ndarray, translation: np.ndarray,
                  K: np.ndarray, iters: int = POINT_ITERS) -> np.ndarray:
    """Gauss-Newton on every keypoint's head-frame position (poses fixed), with a weak prior
    towards its initial mesh position. Returns (P, 3)."""
    points = points.copy()
    summer = group_sum_matrix(tracks.track, tracks.num_tracks)
    eye = np.eye(3)[None]
    for _ in range(iters):
        obs = _keypoint_observations(tracks, points)
        res, _, d_point = residuals_and_jacobians(obs, rotation, translation, K)
        w = obs.weight * huber_weights(res, KEYPOINT_HUBER_PX)
        jw = d_point * w[:, None, None]
        hess = (summer @ np.einsum("mai,maj->mij", jw, d_point).reshape(-1, 9)).reshape(-1, 3, 3)
        grad = (summer @ np.einsum("mai,ma->mi", jw, res)).reshape(-1, 3)
        hess = hess + POINT_PRIOR_WEIGHT * eye
        grad = grad + POINT_PRIOR_WEIGHT * (points - tracks.points0)
        points -= np.linalg.solve(hess, grad[..., None])[..., 0]
    return points


def stabilise(landmark_obs: Observations, tracks: KeypointTracks, rotation: np.ndarray,
              translation: np.ndarray, K: np.ndarray) -> StabiliserResult:
    """Two-stage bundle adjustment of keypoints and poses (see the module docstring).

    Args:
        landmark_obs: landmark observations (weights = semantic weights, 0 for filled-in frames);
        tracks: lifted keypoint tracks; rotation (T, 3, 3), translation (T, 3): landmark poses;
        K: (3, 3) intrinsics of the frames the tracks and landmarks are in.
    """
    lm = Observations(landmark_obs.frame, landmark_obs.points, landmark_obs.uv,
                      LANDMARK_WEIGHT * landmark_obs.weight)
    points = refine_points(tracks, tracks.points0, rotation, translation, K)       # stage 1
    for _ in range(JOINT_ROUNDS):                                                  # stage 2
        obs = lm.concat(_keypoint_observations(tracks, points))
        rotation, translation = refine_poses(obs, rotation, translation, K, iters=POSE_ITERS_PER_ROUND,
                                             huber_px=KEYPOINT_HUBER_PX)
        points = refine_points(tracks, points, rotation, translation, K)
    kp = _keypoint_observations(tracks, points)
    kp_err = float(np.average(reprojection_errors(kp, rotation, translation, K), weights=kp.weight)) \
        if kp.frame.size else float("nan")
    lm_err = float(np.average(reprojection_errors(lm, rotation, translation, K), weights=lm.weight))
    return StabiliserResult(rotation, translation, tracks, points, kp_err, lm_err)
