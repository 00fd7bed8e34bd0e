"""Expression and motion signals from face landmarks, independent of head pose.

Each frame's MediaPipe 3D landmarks (x, y in pixels, z on x's scale) are *frontalised*: aligned
by a similarity transform (rotation, scale, translation) fitted on the rigid landmarks onto the
clip's mean face. Measurements on the frontalised points do not change when the head turns, and
they are in units of the mean face, converted to millimetres through the metric template's
outer-eye-corner distance (an average face: a scale reference, not a measurement of the person).

Signals (T frames):
- the 7 SyncTalk++ core coefficients, ARKit blendshape names (``CORE_NAMES``), each normalised per
  video to [0, 1] (0 = the clip's neutral, its median; 1 = its strong end, a high percentile);
- ``blink`` (AU45-like, [0, 1]: mean eyelid closure of both eyes);
- ``lip_open_mm`` (the inner-lip gap between landmarks 13 and 14) and ``lips_part``
  (AU25-like, [0, 1]: 0 while the lips touch, 1 from ``LIPS_PART_FULL_MM`` above the clip's
  closed level).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from talksplat.core.landmarks import (
    LEFT_EYE_CORNERS,
    LEFT_EYE_OUTER,
    LOWER_LIP_CENTER,
    RIGHT_EYE_CORNERS,
    RIGHT_EYE_OUTER,
    UPPER_LIP_CENTER,
)

CORE_NAMES = ("eyeBlinkLeft", "eyeBlinkRight", "browDownLeft", "browDownRight", "browInnerUp",
              "browOuterUpLeft", "browOuterUpRight")

# Eye openings: pairs of (upper lid, lower lid) landmarks and the corners, per eye.
RIGHT_EYE_LIDS = ((159, 145), (158, 153), (160, 144))
LEFT_EYE_LIDS = ((386, 374), (385, 380), (387, 373))
# Brow parts (upper + lower contour points), measured against eye corners that do not blink.
RIGHT_BROW_INNER, LEFT_BROW_INNER = (107, 55), (336, 285)
RIGHT_BROW_MID, LEFT_BROW_MID = (105, 52, 66, 65), (334, 282, 296, 295)
RIGHT_BROW_OUTER, LEFT_BROW_OUTER = (70, 46), (300, 276)

ALIGN_ITERS = 3                  # mean-shape / alignment alternations
OPEN_EYE_PERCENTILE = 50         # eyes are open most of the time: the median opening is "open"
CLOSED_EYE_PERCENTILE = 1
MIN_RELATIVE_CLOSURE = 0.5       # a clip without blinks must not stretch noise to [0, 1]
ACTIVE_PERCENTILE = 99           # a brow coefficient reaches 1 at this percentile of the clip
MIN_BROW_SPAN = 0.01             # of the inter-ocular distance: floor of the normalising span
CLOSED_LIP_PERCENTILE = 5
LIPS_PART_FULL_MM = 4.0
BLINK_EVENT_THRESHOLD = 0.5


@dataclass
class ExpressionSignals:
    """Per-frame expression values (T frames)."""

    core: np.ndarray           # (T, 7) float32 in [0, 1], columns CORE_NAMES
    core_raw: np.ndarray       # (T, 7) the raw measurements before normalisation
    blink: np.ndarray          # (T,) AU45-like in [0, 1]
    lip_open_mm: np.ndarray    # (T,)
    lips_part: np.ndarray      # (T,) AU25-like in [0, 1]
    normalisation: dict[str, list[float]]   # name -> [neutral, full] raw values used


def similarity_align(src: np.ndarray, dst: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted similarity (Umeyama) that maps points src (N, 3) onto dst (N, 3); returns src aligned."""
    w = weights / weights.sum()
    mu_s, mu_d = w @ src, w @ dst
    a, b = src - mu_s, dst - mu_d
    cov = (b * w[:, None]).T @ a
    u, s, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))      # guard against reflections
    corr = np.diag([1.0, 1.0, d])
    rot = u @ corr @ vt
    scale = np.trace(np.diag(s) @ corr) / max(float(w @ (a ** 2).sum(axis=1)), 1e-12)
    return scale * a @ rot.T + mu_d


def frontalise(landmarks3d: np.ndarray, rigid_weights: np.ndarray) -> np.ndarray:
    """Align every frame (T, N, 3) onto the clip's mean face with similarity transforms.

    ``rigid_weights`` (N,) says which points define the alignment (eyes, brows, lips and jaw
    low, so expressions do not tilt the frame). Returns (T, N, 3).
    """
    pts = landmarks3d.astype(np.float64)
    ref = pts[0]
    out = pts
    for _ in range(ALIGN_ITERS):
        out = np.stack([similarity_align(p, ref, rigid_weights) for p in pts])
        ref = out.mean(axis=0)
    return out


def _dist(p: np.ndarray, a: int, b: int) -> np.ndarray:
    return np.linalg.norm(p[:, a] - p[:, b], axis=-1)


def _mean_y(p: np.ndarray, idx: tuple[int, ...]) -> np.ndarray:
    return p[:, list(idx), 1].mean(axis=1)


def eye_opening(p: np.ndarray, lids: tuple[tuple[int, int], ...], corners: tuple[int, int]) -> np.ndarray:
    """Eye aspect ratio (T,): mean lid gap over the corner-to-corner width."""
    gaps = np.mean([_dist(p, u, d) for u, d in lids], axis=0)
    return gaps / np.maximum(_dist(p, *corners), 1e-9)


def raw_measurements(front: np.ndarray) -> np.ndarray:
    """The 7 raw core measurements (T, 7) on frontalised points (T, 478, 3) (y down).

    Brow heights are in inter-ocular distances above the eye corners (which do not move when
    blinking); "down" is the negative mean of inner and middle brow heights.
    """
    iod = np.maximum(_dist(front, RIGHT_EYE_OUTER, LEFT_EYE_OUTER), 1e-9)

    def height(brow: tuple[int, ...], corner: int) -> np.ndarray:
        return (front[:, corner, 1] - _mean_y(front, brow)) / iod

    inner_r, inner_l = height(RIGHT_BROW_INNER, 133), height(LEFT_BROW_INNER, 362)
    mid_r, mid_l = height(RIGHT_BROW_MID, 133), height(LEFT_BROW_MID, 362)
    outer_r, outer_l = height(RIGHT_BROW_OUTER, 33), height(LEFT_BROW_OUTER, 263)
    ear_l = eye_opening(front, LEFT_EYE_LIDS, LEFT_EYE_CORNERS)
    ear_r = eye_opening(front, RIGHT_EYE_LIDS, RIGHT_EYE_CORNERS)
    return np.stack([ear_l, ear_r, -(inner_l + mid_l) / 2, -(inner_r + mid_r) / 2,
                     (inner_l + inner_r) / 2, outer_l, outer_r], axis=1)


def _normalise_blink(ear: np.ndarray) -> tuple[np.ndarray, list[float]]:
    open_ = float(np.percentile(ear, OPEN_EYE_PERCENTILE))
    closed = min(float(np.percentile(ear, CLOSED_EYE_PERCENTILE)), open_ * (1 - MIN_RELATIVE_CLOSURE))
    return np.clip((open_ - ear) / max(open_ - closed, 1e-9), 0, 1), [open_, closed]


def _normalise_activation(x: np.ndarray) -> tuple[np.ndarray, list[float]]:
    neutral = float(np.median(x))
    full = max(float(np.percentile(x, ACTIVE_PERCENTILE)), neutral + MIN_BROW_SPAN)
    return np.clip((x - neutral) / (full - neutral), 0, 1), [neutral, full]


def compute_expressions(landmarks3d: np.ndarray, rigid_weights: np.ndarray,
                        eye_corner_distance_mm: float) -> ExpressionSignals:
    """All expression signals of a clip.

    Args:
        landmarks3d: (T, 478, 3) MediaPipe landmarks (pixels, z on x's scale); gaps filled.
        rigid_weights: (>=468,) alignment weights of the mesh vertices (irises get weight 0).
        eye_corner_distance_mm: the metric template's distance between landmarks 33 and 263.
    """
    weights = np.zeros(landmarks3d.shape[1])
    weights[:rigid_weights.size] = rigid_weights
    front = frontalise(landmarks3d, weights)
    raw = raw_measurements(front)
    core = np.zeros_like(raw)
    norms: dict[str, list[float]] = {}
    for j, name in enumerate(CORE_NAMES):
        if name.startswith("eyeBlink"):
            core[:, j], norms[name] = _normalise_blink(raw[:, j])
        else:
            core[:, j], norms[name] = _normalise_activation(raw[:, j])
    mm_per_unit = eye_corner_distance_mm / float(np.mean(_dist(front, RIGHT_EYE_OUTER, LEFT_EYE_OUTER)))
    lip = _dist(front, UPPER_LIP_CENTER, LOWER_LIP_CENTER) * mm_per_unit
    closed = float(np.percentile(lip, CLOSED_LIP_PERCENTILE))
    lips_part = np.clip((lip - closed) / LIPS_PART_FULL_MM, 0, 1)
    norms["lip_open_mm"] = [closed, closed + LIPS_PART_FULL_MM]
    blink = core[:, :2].mean(axis=1)
    return ExpressionSignals(core.astype(np.float32), raw.astype(np.float32), blink.astype(np.float32),
                             lip.astype(np.float32), lips_part.astype(np.float32), norms)


def blink_events(blink: np.ndarray, threshold: float = BLINK_EVENT_THRESHOLD) -> np.ndarray:
    """Frame index of the peak of each run of ``blink`` (T,) above ``threshold``: (E,) int."""
    above = blink > threshold
    events = []
    t = 0
    while t < above.size:
        if above[t]:
            end = t
            while end + 1 < above.size and above[end + 1]:
                end += 1
            events.append(t + int(np.argmax(blink[t:end + 1])))
            t = end + 1
        else:
            t += 1
    return np.array(events, dtype=int)


def match_events(found: np.ndarray, truth: np.ndarray, tolerance: int) -> int:
    """How many ``truth`` events have a ``found`` event within ``tolerance`` frames (one-to-one)."""
    used = np.zeros(found.size, bool)
    hits = 0
    for e in truth:
        if found.size == 0:
            break
        d = np.abs(found - e).astype(float)
        d[used] = np.inf
        k = int(np.argmin(d))
        if d[k] <= tolerance:
            used[k] = True
            hits += 1
    return hits
