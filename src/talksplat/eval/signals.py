"""Per-frame signals measured on rendered and real frames: FaceMesh landmarks at a stated resolution,
lip opening, nose trajectory and the 7 core expression coefficients.

Render and ground truth go through exactly the same steps (resize to ``size`` x ``size``, MediaPipe
FaceMesh in video mode), so tracker bias cancels in the comparisons.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Self

import numpy as np

from talksplat.core.landmarks import LEFT_EYE_OUTER, LIP_POINTS, NOSE_BRIDGE, NUM_LANDMARKS, RIGHT_EYE_OUTER
from talksplat.tracking.facemesh import mouth_opening as lip_opening  # noqa: F401  (part of this module's API)

MOUTH_LANDMARKS = LIP_POINTS                    # 40 lip points (MediaPipe numbering)
# Nose bridge to tip: rigid with the skull, unaffected by the jaw (GaussianFlameTalk tracks the nose).
NOSE_LANDMARKS = NOSE_BRIDGE


class LandmarkTracker:
    """MediaPipe FaceMesh on frames resized to ``size`` x ``size`` (area down, cubic up).

    Call it on consecutive frames ((H, W, 3) uint8 RGB); each call returns (478, 3) float32 landmarks
    in pixels of the resized frame (z on x's scale), all NaN when no face is found.
    """

    def __init__(self, size: int = 256) -> None:
        from talksplat.tracking.facemesh import FaceMeshTracker

        self.size = int(size)
        self._tracker = FaceMeshTracker(static_image_mode=False)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        import cv2

        frame = np.ascontiguousarray(frame)
        if frame.shape[:2] != (self.size, self.size):
            shrink = max(frame.shape[:2]) > self.size
            frame = cv2.resize(frame, (self.size, self.size),
                               interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
        found = self._tracker.process(frame)
        return np.full((NUM_LANDMARKS, 3), np.nan, np.float32) if found is None else found

    def close(self) -> None:
        self._tracker.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def track_landmarks(frames: Iterable[np.ndarray], size: int = 256) -> np.ndarray:
    """FaceMesh over consecutive frames at ``size`` x ``size``: (T, 478, 3) float32 pixels, NaN = no face."""
    with LandmarkTracker(size) as tracker:
        out = [tracker(frame) for frame in frames]
    return np.stack(out) if out else np.zeros((0, NUM_LANDMARKS, 3), np.float32)


def detected(landmarks: np.ndarray) -> np.ndarray:
    """(T,) bool: frames of (T, N, D) landmarks where the face was found."""
    return np.all(np.isfinite(landmarks.reshape(len(landmarks), -1)), axis=1)


def inter_ocular_px(landmarks: np.ndarray) -> float:
    """Median outer-eye-corner distance (33-263) in pixels over the frames with a face (NaN if none)."""
    lm = np.asarray(landmarks, np.float64)[..., :2]
    d = np.linalg.norm(lm[:, RIGHT_EYE_OUTER] - lm[:, LEFT_EYE_OUTER], axis=-1)
    d = d[np.isfinite(d)]
    return float(np.median(d)) if d.size else float("nan")


def nose_track(landmarks: np.ndarray) -> np.ndarray:
    """(T, 2) mean image position of the nose bridge-to-tip landmarks (NaN where no face)."""
    return np.asarray(landmarks, np.float64)[:, list(NOSE_LANDMARKS), :2].mean(axis=1)


def core_expressions_raw(landmarks: np.ndarray) -> np.ndarray:
    """The 7 raw core measurements (T, 7) of ``features.expression`` (eye aspect ratios, brow heights
    in inter-ocular units) from (T, 478, 3) FaceMesh landmarks; frames without a face are NaN.

    The frames with a face are frontalised onto their own mean face (similarity fits on the rigid
    landmarks), so head pose does not enter; the measurements are ratios, so the resolution does not.
    """
    from talksplat.features.expression import frontalise, raw_measurements
    from talksplat.tracking.template import load_canonical_template

    lm = np.asarray(landmarks, np.float64)
    out = np.full((len(lm), 7), np.nan)
    ok = detected(lm)
    if ok.sum() < 1:
        return out
    rigid = load_canonical_template().weights
    weights = np.zeros(lm.shape[1])
    weights[:rigid.size] = rigid
    out[ok] = raw_measurements(frontalise(lm[ok], weights))
    return out


def expression_normalisation(core_raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mapping of raw measurements to [0, 1] coefficients, fitted on a clip's (T, 7) ``core_raw``
    with the rules of ``features.expression`` (blink: open = median, closed = 1st percentile but at
    least a 50% closure; brows: neutral = median, full = 99th percentile, span >= 0.01).

    Returns:
        (zero (7,), one (7,)): raw values that map to 0 and to 1.
    """
    from talksplat.features.expression import (
        ACTIVE_PERCENTILE,
        CLOSED_EYE_PERCENTILE,
        CORE_NAMES,
        MIN_BROW_SPAN,
        MIN_RELATIVE_CLOSURE,
        OPEN_EYE_PERCENTILE,
    )

    raw = np.asarray(core_raw, np.float64)
    raw = raw[np.all(np.isfinite(raw), axis=1)]
    zero, one = np.zeros(7), np.ones(7)
    if len(raw) == 0:
        return zero, one
    for j, name in enumerate(CORE_NAMES):
        x = raw[:, j]
        if name.startswith("eyeBlink"):
            zero[j] = np.percentile(x, OPEN_EYE_PERCENTILE)
            one[j] = min(np.percentile(x, CLOSED_EYE_PERCENTILE), zero[j] * (1 - MIN_RELATIVE_CLOSURE))
        else:
            zero[j] = np.median(x)
            one[j] = max(np.percentile(x, ACTIVE_PERCENTILE), zero[j] + MIN_BROW_SPAN)
    return zero, one


def normalise_expressions(core_raw: np.ndarray, zero: np.ndarray, one: np.ndarray) -> np.ndarray:
    """(T, 7) raw measurements -> coefficients in [0, 1] with a fixed mapping (NaN rows stay NaN)."""
    span = np.where(one != zero, one - zero, 1e-9)
    return np.clip((np.asarray(core_raw, np.float64) - zero) / span, 0.0, 1.0)


def eye_aspect_ratio(landmarks: np.ndarray) -> np.ndarray:
    """(T,) eye aspect ratio, mean of both eyes (``features.expression.eye_opening``: mean of three
    lid gaps over the corner-to-corner width, on the 3D landmarks), NaN where no face was found.

    A ratio of distances, so neither the resolution nor the head's in-plane pose enters it."""
    from talksplat.core.landmarks import LEFT_EYE_CORNERS, RIGHT_EYE_CORNERS
    from talksplat.features.expression import LEFT_EYE_LIDS, RIGHT_EYE_LIDS, eye_opening

    lm = np.asarray(landmarks, np.float64)
    out = np.full(len(lm), np.nan)
    ok = detected(lm)
    if ok.any():
        both = (eye_opening(lm[ok], LEFT_EYE_LIDS, LEFT_EYE_CORNERS) + eye_opening(lm[ok], RIGHT_EYE_LIDS,
                                                                                  RIGHT_EYE_CORNERS))
        out[ok] = both / 2
    return out
