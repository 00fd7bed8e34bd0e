"""A thin wrapper over MediaPipe FaceMesh (478 landmarks with irises), returning pixel coordinates.

MediaPipe 0.10.21 ships the FaceMesh model inside its wheel, so this works offline. Landmarks are
returned as (478, 3) float32: x, y in pixels of the input image (x right, y down, pixel centres at
integer coordinates minus 0.5 as MediaPipe normalises by the image size) and z in the same pixel
scale as x (relative depth, smaller = closer to the camera, origin near the head centre).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from types import TracebackType
from typing import Self

import numpy as np

from talksplat.core.landmarks import (
    LEFT_EYE_OUTER,
    LOWER_LIP_CENTER,
    NUM_LANDMARKS,
    RIGHT_EYE_OUTER,
    UPPER_LIP_CENTER,
)
from talksplat.tracking.native_log import native_stderr_settled, native_stderr_silenced


def _quiet_mediapipe_logs() -> None:
    # absl/glog messages from the C++ graph are noise for users; keep warnings and errors of Python.
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class FaceMeshTracker:
    """MediaPipe FaceMesh with ``refine_landmarks=True`` (478 points), one face by default.

    Use ``static_image_mode=True`` for unrelated images and False for video frames in order
    (then MediaPipe tracks from the previous frame and re-detects only when it loses the face).
    """

    def __init__(self, static_image_mode: bool = False, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5, max_num_faces: int = 1) -> None:
        _quiet_mediapipe_logs()
        import mediapipe as mp  # imported lazily: it is slow to import and pulls in a lot

        with native_stderr_settled():   # the graph starts in native threads that log after this returns
            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=static_image_mode, max_num_faces=max_num_faces, refine_landmarks=True,
                min_detection_confidence=min_detection_confidence,
                min_tracking_confidence=min_tracking_confidence)
        self._ran = False

    def _run(self, image: np.ndarray):
        """The graph's result for a checked (H, W, 3) uint8 image, its native log lines silenced."""
        image = np.ascontiguousarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        # The first call starts the graph's calculators, which log from a native thread after it returns.
        silenced = native_stderr_settled if not self._ran else native_stderr_silenced
        self._ran = True
        with silenced():
            return self._mesh.process(image)

    def process(self, image: np.ndarray) -> np.ndarray | None:
        """Landmarks of the most prominent face in ``image`` ((H, W, 3) uint8 RGB).

        Returns:
            (478, 3) float32 pixel landmarks, or None when no face is found.
        """
        h, w = image.shape[:2]
        result = self._run(image)
        if not result.multi_face_landmarks:
            return None
        lms = result.multi_face_landmarks[0].landmark
        out = np.array([(p.x * w, p.y * h, p.z * w) for p in lms], dtype=np.float32)
        return out

    __call__ = process

    def process_all(self, image: np.ndarray) -> list[np.ndarray]:
        """Landmarks of every face found (up to ``max_num_faces``) in ``image`` ((H, W, 3) uint8 RGB).

        Returns:
            a list of (478, 3) float32 pixel landmark arrays (empty when no face is found).
        """
        h, w = image.shape[:2]
        result = self._run(image)
        faces = result.multi_face_landmarks or []
        return [np.array([(p.x * w, p.y * h, p.z * w) for p in face.landmark], dtype=np.float32)
                for face in faces]

    def close(self) -> None:
        """Release the MediaPipe graph."""
        with native_stderr_silenced():
            self._mesh.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def track_frames(frames: Iterable[np.ndarray], static_image_mode: bool = False) -> list[np.ndarray | None]:
    """Run FaceMesh over consecutive frames (each (H, W, 3) uint8 RGB).

    Returns:
        one entry per frame: (478, 3) float32 pixel landmarks, or None where no face was found.
    """
    with FaceMeshTracker(static_image_mode=static_image_mode) as tracker:
        return [tracker.process(frame) for frame in frames]


def mouth_opening(landmarks: list[np.ndarray | None] | np.ndarray) -> np.ndarray:
    """Inner-lip gap (landmarks 13-14) over the outer-eye-corner distance (33-263), per frame.

    Scale-free, so renders and real frames of any size compare. ``landmarks``: a list of (478, >=2)
    arrays or None (no face), or a (T, 478, >=2) array with NaN rows. Returns (T,), NaN where no face.
    """
    if not isinstance(landmarks, np.ndarray):
        landmarks = np.stack([np.full((NUM_LANDMARKS, 2), np.nan) if lm is None else np.asarray(lm)[:, :2]
                              for lm in landmarks]) if len(landmarks) else np.zeros((0, NUM_LANDMARKS, 2))
    lm = np.asarray(landmarks, np.float64)[..., :2]
    eyes = np.linalg.norm(lm[:, RIGHT_EYE_OUTER] - lm[:, LEFT_EYE_OUTER], axis=-1)
    gap = np.linalg.norm(lm[:, UPPER_LIP_CENTER] - lm[:, LOWER_LIP_CENTER], axis=-1)
    return gap / np.where(eyes > 0, eyes, np.nan)


def nan_correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation over the entries where both are finite (None if < 3 or constant)."""
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3 or np.std(a[keep]) == 0 or np.std(b[keep]) == 0:
        return None
    return float(np.corrcoef(a[keep], b[keep])[0, 1])


def detection_rate(landmarks: list[np.ndarray | None]) -> float:
    """Fraction of frames with a detected face (0.0 for an empty list)."""
    return sum(lm is not None for lm in landmarks) / len(landmarks) if landmarks else 0.0
