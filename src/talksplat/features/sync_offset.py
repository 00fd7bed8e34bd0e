"""Audio-video offset of a clip from its own lips and sound, with no trained weights.

Method ("per-lag lip-shape regression"): for every candidate shift ``s`` in -15..+15 frames, fit
a ridge regression that predicts the lip shape of frame ``t`` (and its neighbours) from the
log-mel spectrum around frame ``t + s``, and score it by the variance it explains on held-out
blocks of the clip (5-fold, contiguous blocks). The shift whose audio best predicts the lips is
the offset. Because a separate model is fitted for every shift, this *can* see a constant offset
in the clip it is fitted on (a model trained at shift 0 would call any offset "in sync"), and it
needs nothing shipped: it works on a fresh install for any speaker.

Why lip *shape* vs *spectrum* and not mouth opening vs loudness: on real clips opening-vs-loudness
misplaced an offset by ~10 frames, while shape-vs-spectrum models found it within a frame.
Measured on the shared real clips (7 clips of 20-30 s, audio shifted by -8/0/+6 frames): the
offset is right within +-1 frame on every 20 s window, ~98% of 10 s windows and ~64% of 5 s
windows, so pool over the whole clip (>= 20 s). See benchmarks/sync_encoder.py and docs/audio.md.

Sign: ``offset_frames > 0`` means the audio lags the video (sound comes later than the lips);
correct it by moving the audio earlier by that many frames (:func:`shift_audio`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from talksplat.errors import TalksplatError

# shift_audio is defined in features.audio (shared with prepare); re-exported here, where it was first.
from talksplat.features.audio import (  # noqa: F401
    FPS,
    SAMPLE_RATE,
    SILENCE_PEAK,
    STEPS_PER_FRAME,
    WINDOW_LEAD,
    fit_to_frames,
    mel_windows,
    shift_audio,
)

MAX_SHIFT = 15                    # candidate shifts -15..+15 frames (+-0.6 s at 25 fps)
NUM_FOLDS = 5                     # contiguous cross-validation blocks
MOUTH_CONTEXT = 1                 # lip shapes of frames t-1..t+1 are predicted together
AUDIO_CONTEXT = 1                 # from log-mel frames t+s-1..t+s+1
MOUTH_COMPONENTS = 12             # PCA components kept of the lip shape (noise above that)
AUDIO_COMPONENTS = 40             # PCA components kept of the audio context
RIDGE = 3.0                       # ridge strength relative to the (unit) feature variance
EDGE_FRAMES = 3                   # frames dropped at each end (context padding is not data)
MIN_FRAMES = 4 * MAX_SHIFT        # below this there is nothing to pool over
MIN_RELIABLE_FRAMES = 250         # 10 s: shorter clips gave wrong but confident-looking peaks
# Reliability thresholds, measured on the shared clips (matched vs mismatched speakers, 10-30 s):
# matched clips had a margin of 0.06-0.16 and a peak >= 0.14 at 20 s; mismatched audio a margin
# <= 0.053 and a peak <= 0.03.
RELIABLE_MARGIN = 0.05
RELIABLE_PEAK = 0.05
EXCLUSION = 3                     # the margin compares the peak with shifts >= 3 frames away


@dataclass(frozen=True)
class OffsetEstimate:
    """Result of :func:`estimate_offset`.

    offset_frames: best shift; > 0 = audio lags video (move the audio earlier to correct).
    confidence: held-out variance explained at the peak minus the best shift >= 3 frames away
        (0 = no distinct peak; matched clips measure 0.06-0.16, unrelated audio <= 0.05).
    reliable: confident enough to correct the clip automatically.
    scores: (31,) held-out variance explained for shifts -15..+15 (index i = shift i - 15).
    """

    offset_frames: int
    confidence: float
    reliable: bool
    scores: np.ndarray = field(repr=False)
    peak: float = 0.0
    reason: str = ""

    @property
    def shifts(self) -> np.ndarray:
        """(31,) the candidate shifts in frames, matching ``scores``."""
        return np.arange(-MAX_SHIFT, MAX_SHIFT + 1)


def _fill_missing(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Linearly interpolate frames with NaN (no face found); returns (filled (T, D), valid (T,))."""
    valid = np.all(np.isfinite(x), axis=1)
    if valid.all():
        return x, valid
    if valid.sum() < 2:
        raise TalksplatError("lip landmarks are missing in almost every frame; check face tracking")
    t = np.arange(len(x))
    filled = np.stack([np.interp(t, t[valid], x[valid, d]) for d in range(x.shape[1])], axis=1)
    return filled, valid


def normalise_lip_shapes(mouth_landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lip shapes without head position, in-plane rotation or clip scale.

    Each frame's points are centred and rotated onto the clip's mean shape (2D Procrustes,
    rotation only: per-frame scaling would erase how wide the mouth opens), then the clip is
    divided by its RMS radius.

    Args:
        mouth_landmarks: (T, K, 2) pixel coordinates (any K >= 3; extra columns beyond x, y ignored).
    Returns:
        shapes (T, 2K) float64 and valid (T,) bool (frames that had landmarks).
    """
    lips = np.asarray(mouth_landmarks, dtype=np.float64)
    if lips.ndim != 3 or lips.shape[1] < 3 or lips.shape[2] < 2:
        raise TalksplatError(f"mouth_landmarks must be (T, K, 2) lip points, got shape {lips.shape}")
    lips = lips[:, :, :2]
    flat, valid = _fill_missing(lips.reshape(len(lips), -1))
    lips = flat.reshape(lips.shape)
    lips = lips - lips.mean(axis=1, keepdims=True)
    mean_shape = lips.mean(axis=0)
    # Kabsch in 2D, batched: R = U V^T of each frame's cross-covariance with the mean shape.
    u, _, vt = np.linalg.svd(np.einsum("tki,kj->tij", lips, mean_shape))
    flip = np.linalg.det(u @ vt) < 0
    u[flip, :, -1] *= -1
    aligned = np.einsum("tki,tij->tkj", lips, u @ vt)
    scale = np.sqrt(np.mean(np.sum(aligned ** 2, axis=2)))
    if scale <= 0:
        raise TalksplatError("lip landmarks do not move or are all at one point; check face tracking")
    return (aligned / scale).reshape(len(lips), -1), valid


def frame_log_mel(audio: np.ndarray, n_frames: int) -> np.ndarray:
    """(n_frames, 80) log-mel of each video frame's own 40 ms (mean of its four 10 ms steps)."""
    windows = mel_windows(fit_to_frames(np.asarray(audio, np.float32).reshape(-1), n_frames), n_frames)
    return windows[:, WINDOW_LEAD:WINDOW_LEAD + STEPS_PER_FRAME].mean(axis=1)


def _with_context(x: np.ndarray, radius: int) -> np.ndarray:
    """(T, D) -> (T, (2 radius + 1) D): each row followed by its neighbours (edges repeated)."""
    padded = np.pad(x, ((radius, radius), (0, 0)), mode="edge")
    return np.concatenate([padded[i:i + len(x)] for i in range(2 * radius + 1)], axis=1)


def _principal_components(x: np.ndarray, n: int) -> np.ndarray:
    """(T, D) -> (T, n) projections on the top ``n`` principal axes, on a unit-variance scale."""
    x = x - x.mean(axis=0)
    x = x / (x.std(axis=0).mean() + 1e-12)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:n].T


def solve_spd_batched(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve ``a x = b`` for a batch of symmetric positive-definite systems by Cholesky.

    Written with element-wise numpy (no LAPACK): on a busy 2-core machine OpenBLAS's threaded
    LAPACK took ~7 ms per 40x40 solve (threads spin-waiting) against ~0.2 ms here.

    Args:
        a: (B, n, n); b: (B, n, m).
    Returns:
        (B, n, m)
    """
    n = a.shape[-1]
    chol = np.zeros_like(a)
    for j in range(n):
        row = chol[:, j, :j]
        chol[:, j, j] = np.sqrt(a[:, j, j] - np.einsum("bk,bk->b", row, row))
        chol[:, j + 1:, j] = ((a[:, j + 1:, j] - np.einsum("bik,bk->bi", chol[:, j + 1:, :j], row))
                              / chol[:, j, j][:, None])
    y = np.zeros_like(b)
    for i in range(n):
        y[:, i] = (b[:, i] - np.einsum("bk,bkm->bm", chol[:, i, :i], y[:, :i])) / chol[:, i, i][:, None]
    x = np.zeros_like(b)
    for i in reversed(range(n)):
        x[:, i] = (y[:, i] - np.einsum("bk,bkm->bm", chol[:, i + 1:, i], x[:, i + 1:])) / chol[:, i, i][:, None]
    return x


def _ridge_systems(inputs: np.ndarray, targets: np.ndarray, folds: int, ridge: float):
    """Normal equations of ridge regression leaving out each contiguous fold in turn.

    Returns:
        grams (F, Dx, Dx), rhs (F, Dx, Dy), means [(x_mean, y_mean)] * F, fold (N,) index.
    """
    fold = np.arange(len(inputs)) * folds // len(inputs)
    grams, rhs, means = [], [], []
    for k in range(folds):
        train = fold != k
        x_mean, y_mean = inputs[train].mean(axis=0), targets[train].mean(axis=0)
        xc, yc = inputs[train] - x_mean, targets[train] - y_mean
        grams.append(xc.T @ xc + ridge * len(xc) * np.eye(xc.shape[1]))
        rhs.append(xc.T @ yc)
        means.append((x_mean, y_mean))
    return np.stack(grams), np.stack(rhs), means, fold


def _held_out_r2(inputs: np.ndarray, targets: np.ndarray, weights: np.ndarray, means, fold: np.ndarray) -> float:
    """Variance of ``targets`` (N, Dy) explained when each fold is predicted by the ridge model
    (``weights`` (F, Dx, Dy)) fitted without it."""
    predicted = np.empty_like(targets)
    for k, (x_mean, y_mean) in enumerate(means):
        test = fold == k
        predicted[test] = (inputs[test] - x_mean) @ weights[k] + y_mean
    residual = np.sum((targets - predicted) ** 2)
    total = np.sum((targets - targets.mean(axis=0)) ** 2)
    return float(1.0 - residual / max(total, 1e-12))


def lag_scores(lip_shapes: np.ndarray, frame_audio: np.ndarray, valid: np.ndarray | None = None,
               max_shift: int = MAX_SHIFT) -> np.ndarray:
    """Held-out variance of the lips explained by the audio at each shift.

    Args:
        lip_shapes: (T, Dv) normalised lip shapes; frame_audio: (T, Da) per-frame log-mel;
        valid: (T,) frames whose lips were tracked (others are not scored).
    Returns:
        (2 max_shift + 1,) scores for shifts -max_shift..max_shift.
    """
    n = len(lip_shapes)
    valid = np.ones(n, bool) if valid is None else valid
    lips = _with_context(_principal_components(lip_shapes, MOUTH_COMPONENTS), MOUTH_CONTEXT)
    sound = _principal_components(_with_context(frame_audio, AUDIO_CONTEXT), AUDIO_COMPONENTS)
    problems, grams, rhs = [], [], []
    for shift in range(-max_shift, max_shift + 1):
        frames = np.arange(max(0, -shift) + EDGE_FRAMES, min(n, n - shift) - EDGE_FRAMES)
        frames = frames[valid[frames]]
        inputs, targets = sound[frames + shift], lips[frames]
        g, r, means, fold = _ridge_systems(inputs, targets, NUM_FOLDS, RIDGE)
        problems.append((inputs, targets, means, fold))
        grams.append(g)
        rhs.append(r)
    weights = solve_spd_batched(np.concatenate(grams), np.concatenate(rhs)).reshape(
        len(problems), NUM_FOLDS, sound.shape[1], lips.shape[1])
    return np.array([_held_out_r2(inputs, targets, w, means, fold)
                     for (inputs, targets, means, fold), w in zip(problems, weights, strict=True)])


def estimate_offset(mouth_landmarks: np.ndarray, audio: np.ndarray, fps: float = FPS,
                    sample_rate: int = SAMPLE_RATE) -> OffsetEstimate:
    """Estimate the audio-video offset of a clip (see the module docstring for the method).

    Args:
        mouth_landmarks: (T, K, 2) pixel coordinates of the lip landmarks of the video's T frames
            (MediaPipe inner + outer lips, 40 points; any consistent set of >= 3 lip points works).
            Frames without a face may be NaN.
        audio: (N,) float32 mono of the same clip, at ``sample_rate``.
        fps: video frame rate (25: the pipeline's rate); sample_rate: must be 16000.
    Returns:
        :class:`OffsetEstimate`; clips shorter than 2.4 s give ``reliable=False`` and offset 0.
    """
    if abs(fps - FPS) > 1e-6 or sample_rate != SAMPLE_RATE:
        raise TalksplatError(f"estimate_offset works at {FPS} fps and {SAMPLE_RATE // 1000} kHz (got {fps} fps, {sample_rate} Hz); "
                             "resample the video and audio first")
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    n_frames = len(mouth_landmarks)
    no_scores = np.zeros(2 * MAX_SHIFT + 1)
    if n_frames < MIN_FRAMES:
        return OffsetEstimate(0, 0.0, False, no_scores, reason=f"clip too short ({n_frames} frames < {MIN_FRAMES})")
    if audio.size == 0 or float(np.max(np.abs(audio))) < SILENCE_PEAK:
        return OffsetEstimate(0, 0.0, False, no_scores, reason="the audio is silent")
    shapes, valid = normalise_lip_shapes(mouth_landmarks)
    scores = lag_scores(shapes, frame_log_mel(audio, n_frames), valid)
    return summarise_scores(scores, n_frames)


def summarise_scores(scores: np.ndarray, n_frames: int) -> OffsetEstimate:
    """Offset, confidence (peak margin) and reliability from (31,) per-shift scores of a clip
    of ``n_frames`` frames."""
    best = int(np.argmax(scores))
    far = np.abs(np.arange(len(scores)) - best) >= EXCLUSION
    peak = float(scores[best])
    margin = max(0.0, peak - float(scores[far].max()))
    reason = ""
    if margin < RELIABLE_MARGIN or peak < RELIABLE_PEAK:
        reason = (f"no distinct peak (margin {margin:.3f} < {RELIABLE_MARGIN} or peak {peak:.3f} "
                  f"< {RELIABLE_PEAK})")
    elif best in (0, len(scores) - 1):
        reason = "the best shift is at the edge of the search range (the offset may be larger)"
    elif n_frames < MIN_RELIABLE_FRAMES:
        reason = (f"only {n_frames / FPS:.1f} s of video; >= {MIN_RELIABLE_FRAMES / FPS:.0f} s (20 s best) "
                  "is needed")
    return OffsetEstimate(best - (len(scores) - 1) // 2, margin, not reason, scores, peak, reason)


def shift_frame_features(features: np.ndarray, offset_frames: int) -> np.ndarray:
    """Correct an offset on per-frame features (T, ...): row t takes row t + offset (edges repeated)."""
    index = np.clip(np.arange(len(features)) + int(offset_frames), 0, len(features) - 1)
    return features[index]
