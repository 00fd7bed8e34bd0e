"""Lip state: a few numbers per frame that describe the mouth's shape, and a linear map from audio.

Why: TalkingGaussian drives its motion field with DeepSpeech/HuBERT features, speech models trained
on thousands of hours that already separate phonetic content from the voice. None ships offline
(docs/audio.md). A network trained end to end on raw log-mel from a 20-second clip memorises the
training frames: on held-out frames its lips barely moved (lip-opening correlation -0.15 on the
German anchor clip). A ridge regression from the same log-mel windows to the tracked lip shape,
fitted on the training frames, predicts held-out lip shapes with a correlation of ~0.6-0.7. So
talksplat's default audio condition is this predicted *lip state*: the motion field learns lip
shape -> deformation from the tracked shapes (teacher forcing), and at render time it gets the
shapes predicted from audio.

- :class:`LipBasis` - principal components of Procrustes-normalised lip landmark shapes
  (``sync_offset.normalise_lip_shapes``), each scaled to unit variance over the training frames;
- :func:`fit_audio_to_lips` - ridge regression from flattened audio windows to those coefficients,
  its strength chosen by cross-validation over contiguous blocks of training frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from talksplat.errors import TalksplatError

DEFAULT_RIDGE_GRID = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)
CV_FOLDS = 5              # contiguous blocks: neighbouring frames are near-duplicates
MIN_TRAIN_FRAMES = 50     # 2 s: fewer frames cannot fit a regression from ~1000 inputs
# Lip states predicted from new audio are clamped to this many standard deviations of the tracked
# ones (the coefficients have unit variance, so +-3 holds ~99.7% of a normal spread; the tracked 1st
# and 99th percentiles lie at +-2.0-2.7 on the real clips). A voice unlike the training one, above
# all a band-limited one, sends the linear map far outside: Andrew's avatar driven by a telephone
# version of an unseen voice got states up to 8.8 with 89-100% of the frames outside the tracked
# range on two coefficients, and its blinks went shallow (EAR p5 0.120 against 0.048 real; clamped:
# 0.077). The motion fields never saw such states in training.
PREDICTED_STATE_LIMIT = 3.0


@dataclass
class LipBasis:
    """Lip shape (T, 2K) -> coefficients (T, k) on the top-k principal axes at unit variance."""

    mean: np.ndarray         # (2K,)
    components: np.ndarray   # (k, 2K) orthonormal rows
    scale: np.ndarray        # (k,) std of each coefficient over the fitting frames
    explained: np.ndarray    # (k,) fraction of the shape variance each axis explains

    @classmethod
    def fit(cls, shapes: np.ndarray, dims: int) -> LipBasis:
        """PCA of ``shapes`` (T, 2K) keeping ``dims`` axes."""
        shapes = np.asarray(shapes, dtype=np.float64)
        if dims < 1 or dims > min(shapes.shape):
            raise TalksplatError(f"lip state needs 1 <= dims <= {min(shapes.shape)} (got {dims})")
        mean = shapes.mean(axis=0)
        _, s, vt = np.linalg.svd(shapes - mean, full_matrices=False)
        coeffs = (shapes - mean) @ vt[:dims].T
        # Lips that never move (a still clip) have no variance to share out: each axis explains 0.
        explained = s ** 2 / max(float(np.sum(s ** 2)), np.finfo(np.float64).tiny)
        return cls(mean, vt[:dims], coeffs.std(axis=0).clip(min=1e-9), explained[:dims])

    def coefficients(self, shapes: np.ndarray) -> np.ndarray:
        """(T, 2K) shapes -> (T, k) float32 coefficients."""
        return (((np.asarray(shapes, np.float64) - self.mean) @ self.components.T) / self.scale).astype(np.float32)


@dataclass
class AudioToLips:
    """Ridge regression ``(x - x_mean) / x_std @ weight + bias`` from flattened audio windows."""

    x_mean: np.ndarray       # (F,)
    x_std: np.ndarray        # (F,)
    weight: np.ndarray       # (F, k)
    bias: np.ndarray         # (k,)
    ridge: float             # the chosen regularisation strength
    cv_correlation: np.ndarray  # (k,) out-of-fold correlation of each coefficient at that strength
    gain: np.ndarray         # (k,) articulation gain folded into ``weight`` (1 = plain ridge)

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """(T, ...) audio windows -> (T, k) float32 predicted lip coefficients."""
        x = np.asarray(windows, np.float64).reshape(len(windows), -1)
        return (((x - self.x_mean) / self.x_std) @ self.weight + self.bias).astype(np.float32)


def _solve_ridge(x: np.ndarray, y: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge on centred data: returns (weight (F, k), bias (k,)); the bias is not penalised."""
    xm, ym = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - xm, y - ym
    n, f = xc.shape
    if f > n:  # dual form: an n x n system instead of f x f
        alpha = np.linalg.solve(xc @ xc.T + ridge * np.eye(n), yc)
        weight = xc.T @ alpha
    else:
        weight = np.linalg.solve(xc.T @ xc + ridge * np.eye(f), xc.T @ yc)
    return weight, ym - xm @ weight


def _columnwise_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    denom = np.sqrt((a ** 2).sum(axis=0) * (b ** 2).sum(axis=0)).clip(min=1e-12)
    return (a * b).sum(axis=0) / denom


def fit_audio_to_lips(windows: np.ndarray, targets: np.ndarray,
                      ridge_grid: tuple[float, ...] = DEFAULT_RIDGE_GRID, max_gain: float = 1.0) -> AudioToLips:
    """Fits audio windows (T, ...) -> lip coefficients (T, k) on the given (training) frames.

    The strength is the grid value with the best mean out-of-fold correlation over ``CV_FOLDS``
    contiguous blocks (random folds would leak: adjacent frames share most of their audio window).
    Ridge predictions are shrunk towards the mean (a mumbling mouth); with ``max_gain`` > 1 each
    coefficient's prediction is scaled up so its out-of-fold spread matches the tracked one's, by at
    most ``max_gain`` (this restores articulation; it amplifies the prediction's errors alike).
    """
    x = np.asarray(windows, np.float64).reshape(len(windows), -1)
    y = np.asarray(targets, np.float64)
    if len(x) != len(y):
        raise TalksplatError(f"audio windows ({len(x)} frames) and lip targets ({len(y)}) differ in length")
    if len(x) < MIN_TRAIN_FRAMES:
        raise TalksplatError(f"the audio-to-lips map needs at least {MIN_TRAIN_FRAMES} training frames "
                             f"(got {len(x)}); use a longer video")
    x_mean, x_std = x.mean(axis=0), x.std(axis=0).clip(min=1e-6)
    x = (x - x_mean) / x_std
    folds = np.array_split(np.arange(len(x)), CV_FOLDS)
    best = None
    for ridge in ridge_grid:
        oof = np.empty_like(y)
        for fold in folds:
            keep = np.setdiff1d(np.arange(len(x)), fold)
            w, b = _solve_ridge(x[keep], y[keep], ridge)
            oof[fold] = x[fold] @ w + b
        corr = np.nan_to_num(_columnwise_correlation(oof, y))
        if best is None or corr.mean() > best[1].mean():
            best = (ridge, corr, y.std(axis=0) / oof.std(axis=0).clip(min=1e-9))
    ridge, corr, spread_ratio = best
    gain = np.clip(spread_ratio, 1.0, max(max_gain, 1.0))
    weight, bias = _solve_ridge(x, y, ridge)
    return AudioToLips(x_mean, x_std, weight * gain, bias, ridge, corr, gain)
