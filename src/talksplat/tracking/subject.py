"""Choosing the subject among several faces, and filling short detection gaps.

FaceMesh may return several faces per frame (a crowd behind a news anchor, a picture on the wall).
The subject is the face that is large and consistently present: we take, per frame, the largest
face, find where it usually is (median centre), start from the face nearest to that place, and
then follow the face nearest to the previous choice. A face that jumps further than
``MAX_JUMP_FACE_SIZES`` face sizes between frames is treated as a different person (missing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_JUMP_FACE_SIZES = 0.5       # a jump larger than this many face sizes means another person
MULTI_FACE_WARN_FRACTION = 0.05  # warn when more than this fraction of frames has several faces


@dataclass
class SubjectTrack:
    """The chosen face per frame.

    landmarks: (T, 478, 3) float32 (NaN where missing before interpolation);
    detected: (T,) bool; multi_face_frames: frames where more than one face was seen.
    """

    landmarks: np.ndarray
    detected: np.ndarray
    multi_face_frames: int

    @property
    def detection_rate(self) -> float:
        return float(self.detected.mean()) if self.detected.size else 0.0


def face_centre_and_size(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre (2,) and size (the larger side of the 2D bounding box) of one face (478, >=2)."""
    lo, hi = landmarks[:, :2].min(axis=0), landmarks[:, :2].max(axis=0)
    return 0.5 * (lo + hi), float(np.max(hi - lo))


def choose_subject(faces_per_frame: list[list[np.ndarray]], num_landmarks: int = 478) -> SubjectTrack:
    """Pick one face per frame (see the module docstring).

    Args:
        faces_per_frame: for each frame, the list of (478, 3) landmark arrays found.
    """
    num_frames = len(faces_per_frame)
    out = np.full((num_frames, num_landmarks, 3), np.nan, dtype=np.float32)
    detected = np.zeros(num_frames, dtype=bool)
    multi = sum(len(faces) > 1 for faces in faces_per_frame)
    largest_centres = []
    for faces in faces_per_frame:
        if faces:
            stats = [face_centre_and_size(f) for f in faces]
            largest_centres.append(max(stats, key=lambda s: s[1])[0])
    if not largest_centres:
        return SubjectTrack(out, detected, multi)
    anchor = np.median(np.stack(largest_centres), axis=0)
    previous: tuple[np.ndarray, float] | None = None
    for i, faces in enumerate(faces_per_frame):
        if not faces:
            continue
        stats = [face_centre_and_size(f) for f in faces]
        ref = anchor if previous is None else previous[0]
        dists = [np.linalg.norm(c - ref) for c, _ in stats]
        best = int(np.argmin(dists))
        centre, size = stats[best]
        if previous is not None and dists[best] > MAX_JUMP_FACE_SIZES * max(size, previous[1]) \
                and len(faces) > 1:
            continue  # only other people are visible in this frame
        out[i] = faces[best]
        detected[i] = True
        previous = (centre, size)
    return SubjectTrack(out, detected, multi)


def interpolate_gaps(landmarks: np.ndarray, detected: np.ndarray) -> np.ndarray:
    """Fill missing frames linearly between the nearest detections (held constant at the ends).

    Args:
        landmarks: (T, N, C) with arbitrary values where ``detected`` (T,) is False.
    Returns:
        (T, N, C) float32.
    """
    if detected.all():
        return landmarks.astype(np.float32)
    if not detected.any():
        raise ValueError("no frame has a detection")
    t = np.arange(landmarks.shape[0])
    flat = landmarks.reshape(landmarks.shape[0], -1)
    known = np.flatnonzero(detected)
    filled = np.empty_like(flat, dtype=np.float32)
    for j in range(flat.shape[1]):
        filled[:, j] = np.interp(t, known, flat[known, j])
    return filled.reshape(landmarks.shape)


def longest_gap(detected: np.ndarray) -> int:
    """Length of the longest run of False in ``detected`` (T,)."""
    best = run = 0
    for d in detected:
        run = 0 if d else run + 1
        best = max(best, run)
    return best
