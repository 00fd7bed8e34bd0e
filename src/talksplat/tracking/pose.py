"""Rigid head poses from 2D points: batched Gauss-Newton PnP, focal-length search, jitter metrics.

Conventions: OpenCV pinhole camera (x right, y down, z forward), pixel centres at integer
coordinates, a head point maps to the camera by ``X_cam = R @ X_head + t`` (the world-to-camera
transform when the world is the head frame). Rotations are updated on the left:
``R <- exp([w]x) R``.

All solvers work on *observations*: M rows of (frame index, head-frame point, pixel, weight),
sorted by frame, so landmarks (every frame sees the same 468 template points) and optical-flow
keypoints (tracks of varying length) go through the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import scipy.sparse as sp
from scipy.spatial.transform import Rotation

# Gauss-Newton / Levenberg-Marquardt settings.
LM_DAMPING = 1e-3            # relative diagonal damping
HUBER_PX = 2.0               # residuals beyond this many pixels get linearly (not quadratically) weighted
MIN_DEPTH_MM = 50.0          # guards the projection against points behind or at the camera
DEFAULT_POSE_ITERS = 5

# Focal search: f = factor * image width, factors log-spaced, then a golden-section refinement.
FOCAL_FACTOR_RANGE = (0.4, 12.0)
FOCAL_GRID_POINTS = 17
FOCAL_GOLDEN_ITERS = 10
FOCAL_SEARCH_FRAMES = 40     # evenly spaced frames used by the search (speed)
FOCAL_SEARCH_POSE_ITERS = 5
GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0


@dataclass
class Observations:
    """M 2D observations of head-frame points, sorted by frame.

    frame: (M,) int; points: (M, 3) head-frame mm; uv: (M, 2) pixels; weight: (M,) >= 0.
    """

    frame: np.ndarray
    points: np.ndarray
    uv: np.ndarray
    weight: np.ndarray

    @classmethod
    def from_landmarks(cls, uv: np.ndarray, template: np.ndarray, weights: np.ndarray,
                       frame_weight: np.ndarray | None = None) -> Observations:
        """Every frame sees every template point. uv (T, N, 2); template (N, 3); weights (N,);
        frame_weight (T,) optional (e.g. 0 for interpolated frames)."""
        t, n = uv.shape[:2]
        w = np.broadcast_to(weights[None, :], (t, n)).astype(np.float64)
        if frame_weight is not None:
            w = w * frame_weight[:, None]
        return cls(np.repeat(np.arange(t), n), np.tile(template, (t, 1)).astype(np.float64),
                   uv.reshape(-1, 2).astype(np.float64), w.reshape(-1))

    def concat(self, other: Observations) -> Observations:
        """Both sets, re-sorted by frame."""
        frame = np.concatenate([self.frame, other.frame])
        order = np.argsort(frame, kind="stable")
        return Observations(frame[order], np.concatenate([self.points, other.points])[order],
                            np.concatenate([self.uv, other.uv])[order],
                            np.concatenate([self.weight, other.weight])[order])


def intrinsics_matrix(focal: float, width: int, height: int) -> np.ndarray:
    """(3, 3) K with the principal point at the image centre ((W-1)/2, (H-1)/2)."""
    return np.array([[focal, 0.0, (width - 1) / 2.0], [0.0, focal, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def project(points: np.ndarray, rotation: np.ndarray, translation: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Project head points into each frame.

    Args:
        points: (N, 3) head-frame points; rotation (T, 3, 3); translation (T, 3); K (3, 3).
    Returns:
        (T, N, 2) pixels.
    """
    cam = np.einsum("tij,nj->tni", rotation, points) + translation[:, None, :]
    z = np.maximum(cam[..., 2], MIN_DEPTH_MM)
    return np.stack([K[0, 0] * cam[..., 0] / z + K[0, 2], K[1, 1] * cam[..., 1] / z + K[1, 2]], axis=-1)


def group_sum_matrix(frame: np.ndarray, num_frames: int) -> sp.csr_matrix:
    """(T, M) sparse 0/1 matrix that sums per-observation rows into per-group (frame/track) rows."""
    m = frame.size
    return sp.csr_matrix((np.ones(m), (frame, np.arange(m))), shape=(num_frames, m))


def residuals_and_jacobians(obs: Observations, rotation: np.ndarray, translation: np.ndarray,
                            K: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per observation: residual (M, 2) = projection - uv, pose Jacobian (M, 2, 6), and
    d(projection)/d(X_cam) R (M, 2, 3) (the Jacobian w.r.t. the head point)."""
    rotated = np.einsum("mij,mj->mi", rotation[obs.frame], obs.points)
    cam = rotated + translation[obs.frame]
    z = np.maximum(cam[:, 2], MIN_DEPTH_MM)
    fx, fy = K[0, 0], K[1, 1]
    proj = np.stack([fx * cam[:, 0] / z + K[0, 2], fy * cam[:, 1] / z + K[1, 2]], axis=1)
    d_proj = np.zeros((obs.frame.size, 2, 3))
    d_proj[:, 0, 0] = fx / z
    d_proj[:, 0, 2] = -fx * cam[:, 0] / z ** 2
    d_proj[:, 1, 1] = fy / z
    d_proj[:, 1, 2] = -fy * cam[:, 1] / z ** 2
    # d(exp([w]x) Y)/dw at w = 0 is -[Y]x.
    y0, y1, y2 = rotated[:, 0], rotated[:, 1], rotated[:, 2]
    neg_skew = np.zeros((obs.frame.size, 3, 3))
    neg_skew[:, 0, 1], neg_skew[:, 0, 2] = y2, -y1
    neg_skew[:, 1, 0], neg_skew[:, 1, 2] = -y2, y0
    neg_skew[:, 2, 0], neg_skew[:, 2, 1] = y1, -y0
    jac = np.concatenate([d_proj @ neg_skew, d_proj], axis=2)
    d_point = d_proj @ rotation[obs.frame]
    return proj - obs.uv, jac, d_point


def huber_weights(residual: np.ndarray, delta: float) -> np.ndarray:
    """IRLS weights (M,) of the Huber loss for residual vectors (M, 2)."""
    norm = np.linalg.norm(residual, axis=1)
    return np.where(norm <= delta, 1.0, delta / np.maximum(norm, 1e-12))


def refine_poses(obs: Observations, rotation: np.ndarray, translation: np.ndarray, K: np.ndarray,
                 iters: int = DEFAULT_POSE_ITERS, huber_px: float = HUBER_PX,
                 pose_prior: tuple[np.ndarray, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Levenberg-Marquardt on every frame's pose at once (points fixed).

    Args:
        obs: observations; rotation (T, 3, 3), translation (T, 3): initial poses; K (3, 3).
    Returns:
        rotation (T, 3, 3), translation (T, 3).
    """
    rotation, translation = rotation.copy(), translation.copy()
    num_frames = rotation.shape[0]
    summer = group_sum_matrix(obs.frame, num_frames)
    has_obs = np.asarray(summer.sum(axis=1)).ravel() > 0
    for _ in range(iters):
        res, jac, _ = residuals_and_jacobians(obs, rotation, translation, K)
        w = obs.weight * huber_weights(res, huber_px)
        jw = jac * w[:, None, None]
        hess = (summer @ np.einsum("mai,maj->mij", jw, jac).reshape(-1, 36)).reshape(num_frames, 6, 6)
        grad = (summer @ np.einsum("mai,ma->mi", jw, res)).reshape(num_frames, 6)
        diag = np.einsum("tii->ti", hess)
        hess = hess + (LM_DAMPING * diag + 1e-9)[:, :, None] * np.eye(6)[None]
        step = np.zeros((num_frames, 6))
        step[has_obs] = -np.linalg.solve(hess[has_obs], grad[has_obs][..., None])[..., 0]
        rotation = Rotation.from_rotvec(step[:, :3]).as_matrix() @ rotation
        translation = translation + step[:, 3:]
    return rotation, translation


def reprojection_errors(obs: Observations, rotation: np.ndarray, translation: np.ndarray,
                        K: np.ndarray) -> np.ndarray:
    """Pixel distance (M,) between each observation and its projected point."""
    res, _, _ = residuals_and_jacobians(obs, rotation, translation, K)
    return np.linalg.norm(res, axis=1)


def weighted_frame_error(obs: Observations, rotation: np.ndarray, translation: np.ndarray,
                         K: np.ndarray) -> np.ndarray:
    """Weighted mean reprojection error per frame (T,), pixels."""
    err = reprojection_errors(obs, rotation, translation, K)
    num_frames = rotation.shape[0]
    wsum = np.bincount(obs.frame, weights=obs.weight, minlength=num_frames)
    esum = np.bincount(obs.frame, weights=obs.weight * err, minlength=num_frames)
    return esum / np.maximum(wsum, 1e-12)


def initial_poses(uv: np.ndarray, template: np.ndarray, weights: np.ndarray, K: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame OpenCV PnP (SQPnP) on the rigid landmarks: uv (T, N, 2) -> R (T, 3, 3), t (T, 3)."""
    rigid = weights >= np.max(weights)
    obj = np.ascontiguousarray(template[rigid], dtype=np.float64)
    rotations, translations = [], []
    for frame_uv in uv:
        img = np.ascontiguousarray(frame_uv[rigid], dtype=np.float64)
        ok, rvec, tvec = cv2.solvePnP(obj, img, K, None, flags=cv2.SOLVEPNP_SQPNP)
        if not ok:  # SQPnP practically never fails; fall back to a frontal head 0.7 m away
            rvec, tvec = np.zeros(3), np.array([0.0, 0.0, 700.0])
        rotations.append(cv2.Rodrigues(np.asarray(rvec, dtype=np.float64))[0])
        translations.append(np.asarray(tvec, dtype=np.float64).reshape(3))
    return np.stack(rotations), np.stack(translations)


@dataclass
class FocalSearch:
    """Result of :func:`search_focal`."""

    focal: float
    factors: np.ndarray          # (G,) focal / width of the evaluated candidates (grid + refinement)
    errors: np.ndarray           # (G,) weighted mean reprojection error (px) at each
    at_edge: bool                # the minimum sits at the end of the range: focal is unconstrained


def _focal_error(focal: float, uv: np.ndarray, template: np.ndarray, weights: np.ndarray,
                 width: int, height: int, warm: tuple[np.ndarray, np.ndarray, float] | None
                 ) -> tuple[float, tuple[np.ndarray, np.ndarray, float]]:
    K = intrinsics_matrix(focal, width, height)
    if warm is None:
        rotation, translation = initial_poses(uv, template, weights, K)
    else:
        rotation, translation, warm_focal = warm
        # At a longer focal the same image needs the head proportionally further away.
        translation = translation * (focal / warm_focal)
    obs = Observations.from_landmarks(uv, template, weights)
    rotation, translation = refine_poses(obs, rotation, translation, K, iters=FOCAL_SEARCH_POSE_ITERS)
    err = float(np.average(reprojection_errors(obs, rotation, translation, K), weights=obs.weight))
    return err, (rotation, translation, focal)


def search_focal(uv: np.ndarray, template: np.ndarray, weights: np.ndarray, width: int, height: int,
                 frame_weight: np.ndarray | None = None) -> FocalSearch:
    """Find the focal length (pixels) that best explains the landmarks of many frames at once.

    A single frame leaves the focal unconstrained; across frames with different poses the
    template's depth relief pins it down (as well as the template's depth is right).

    Args:
        uv: (T, N, 2) landmarks; template (N, 3) mm; weights (N,); frame_weight (T,) optional
        (frames with weight 0, e.g. interpolated ones, are not used).
    """
    usable = np.arange(uv.shape[0]) if frame_weight is None else np.flatnonzero(frame_weight > 0)
    pick = usable[np.linspace(0, usable.size - 1, min(FOCAL_SEARCH_FRAMES, usable.size)).round().astype(int)]
    sub = uv[pick]
    log_lo, log_hi = np.log(FOCAL_FACTOR_RANGE[0]), np.log(FOCAL_FACTOR_RANGE[1])
    grid = np.exp(np.linspace(log_lo, log_hi, FOCAL_GRID_POINTS))
    evaluated: dict[float, float] = {}
    states: dict[float, tuple[np.ndarray, np.ndarray, float]] = {}
    warm = None
    for factor in grid:
        evaluated[float(factor)], warm = _focal_error(factor * width, sub, template, weights, width, height, warm)
        states[float(factor)] = warm
    errors = np.array([evaluated[float(f)] for f in grid])
    best = int(np.argmin(errors))
    at_edge = best in (0, grid.size - 1)
    # Golden-section search in log-focal within the bracket around the best grid point.
    a = np.log(grid[max(best - 1, 0)])
    b = np.log(grid[min(best + 1, grid.size - 1)])
    c, d = b - GOLDEN * (b - a), a + GOLDEN * (b - a)

    def err_at(log_factor: float) -> float:
        factor = float(np.exp(log_factor))
        if factor not in evaluated:
            # Start from the poses of the nearest focal evaluated so far (saves the PnP restart).
            nearest = min(states, key=lambda f: abs(np.log(f / factor)))
            evaluated[factor], states[factor] = _focal_error(factor * width, sub, template, weights, width,
                                                             height, states[nearest])
        return evaluated[factor]

    fc, fd = err_at(c), err_at(d)
    for _ in range(FOCAL_GOLDEN_ITERS):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - GOLDEN * (b - a)
            fc = err_at(c)
        else:
            a, c, fc = c, d, fd
            d = a + GOLDEN * (b - a)
            fd = err_at(d)
    factors = np.array(sorted(evaluated))
    errs = np.array([evaluated[f] for f in factors])
    best_factor = float(factors[np.argmin(errs)])
    return FocalSearch(focal=best_factor * width, factors=factors, errors=errs, at_edge=at_edge)


def rotation_jitter_deg(rotation: np.ndarray) -> float:
    """High-frequency energy of a rotation sequence (T, 3, 3), as an RMS angle in degrees.

    The frame-to-frame rotation increments ``log(R_t R_{t-1}^T)`` are differenced once more
    (a second difference: smooth motion, even fast, contributes little; frame-to-frame
    shaking contributes fully), and the RMS of its norm is returned.
    """
    if rotation.shape[0] < 3:
        return 0.0
    steps = Rotation.from_matrix(rotation[1:] @ np.transpose(rotation[:-1], (0, 2, 1))).as_rotvec()
    accel = np.diff(steps, axis=0)
    return float(np.degrees(np.sqrt(np.mean(np.sum(accel ** 2, axis=1)))))


def translation_jitter_mm(translation: np.ndarray) -> float:
    """RMS norm of the second difference of a translation sequence (T, 3), mm."""
    if translation.shape[0] < 3:
        return 0.0
    return float(np.sqrt(np.mean(np.sum(np.diff(translation, n=2, axis=0) ** 2, axis=1))))


def euler_pyr_deg(rotation: np.ndarray) -> np.ndarray:
    """(T, 3) [pitch, yaw, roll] in degrees with R = Rz(roll) Ry(yaw) Rx(pitch) (as the synthetic GT)."""
    zyx = Rotation.from_matrix(rotation).as_euler("ZYX", degrees=True)
    return zyx[:, ::-1].copy()
