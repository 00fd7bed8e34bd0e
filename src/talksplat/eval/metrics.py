"""Metrics of a rendered talking head against ground truth or its driving audio (no weights needed).

Everything here is a pure function of arrays (numpy, torch for the convolutions); what each metric
means and which published metric it stands in for is in docs/eval.md.

- Image quality: :func:`psnr` (capped at ``PSNR_CAP_DB`` for identical images), :func:`ssim`
  (Wang et al. 2004: Gaussian window 11, sigma 1.5, K = 0.01/0.03, valid window positions),
  :func:`ms_ssim` (Wang et al. 2003: 5 scales, fewer on small images).
- Motion: :func:`lmd` (landmark distance in pixels), :func:`expression_error` (7 core coefficients,
  an AUE analogue), :func:`pearson` / :func:`lagged_correlation`.
- Lip sync: :func:`av_sync` (talksplat's weight-free A/V offset scorer, not SyncNet) and
  :func:`audio_envelope`.
- Stability (GaussianFlameTalk Sec. 3.3): :func:`stability_score` / :func:`stability_scores` (and the
  per-frame :func:`stability_components`) on nose trajectories.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from talksplat.core.constants import FPS as VIDEO_FPS
from talksplat.core.constants import SAMPLE_RATE
from talksplat.engine.losses import EYE_BOX_HEIGHT, EYE_BOX_WIDTH, eye_boxes  # noqa: F401  (the eye region)
from talksplat.errors import TalksplatError

PSNR_CAP_DB = 100.0               # PSNR of identical images (MSE 0) is reported as this, not inf
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)   # Wang, Simoncelli, Bovik 2003

FPS = float(VIDEO_FPS)
STABILITY_CUTOFF_HZ = 5.0         # nose motion above this is "high frequency" (head motion is slower)
STABILITY_FFT_WINDOW = 16         # frames per short-time spectrum (0.64 s at 25 fps, 1.56 Hz bins)
STABILITY_VARIABILITY_WINDOW = 5  # frames per local standard deviation of the motion magnitude
STABILITY_MIN_FRAMES = 8


# ---------------------------------------------------------------------------------------------- images


def as_float_image(image) -> np.ndarray:
    """(H, W, C) or (H, W) uint8 / float in [0, 1] (numpy or torch) -> (H, W, C) float64 in [0, 1]."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    x = np.asarray(image)
    x = x.astype(np.float64) / 255.0 if x.dtype == np.uint8 else x.astype(np.float64)
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3:
        raise TalksplatError(f"expected an (H, W, C) image, got shape {x.shape}")
    return x


def _pair(img, ref) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_float_image(img), as_float_image(ref)
    if a.shape != b.shape:
        raise TalksplatError(f"images differ in shape: {a.shape} vs {b.shape}")
    return a, b


def psnr(img, ref, max_db: float | None = PSNR_CAP_DB) -> float:
    """Peak signal-to-noise ratio in dB of ``img`` vs ``ref`` ((H, W, C), range [0, 1] or uint8).

    ``10 log10(1 / MSE)`` over all pixels and channels. Identical images (MSE 0) give ``max_db``
    (100 dB by default; ``max_db=None`` returns ``inf``); every value is capped at ``max_db``.
    """
    a, b = _pair(img, ref)
    mse = float(np.mean((a - b) ** 2))
    value = math.inf if mse == 0.0 else -10.0 * math.log10(mse)
    return value if max_db is None else min(value, float(max_db))


@functools.cache
def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    k = torch.exp(-x.square() / (2 * sigma ** 2))
    return k / k.sum()


def _filter_valid(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of x (B, C, H, W) at valid positions only -> (B, C, H-10, W-10)."""
    c = x.shape[1]
    kx = window.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    ky = window.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    return F.conv2d(F.conv2d(x, kx, groups=c), ky, groups=c)


def _ssim_and_cs(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SSIM and mean contrast-structure term of x, y (1, C, H, W) in [0, 1] (per channel, then mean)."""
    window = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA)
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    mu_x, mu_y, exx, eyy, exy = _filter_valid(torch.cat([x, y, x * x, y * y, x * y], dim=1), window).chunk(5, dim=1)
    sxx, syy, sxy = exx - mu_x.square(), eyy - mu_y.square(), exy - mu_x * mu_y
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    lum = (2 * mu_x * mu_y + c1) / (mu_x.square() + mu_y.square() + c1)
    return (lum * cs).mean(dim=(2, 3)).mean(), cs.mean(dim=(2, 3)).mean()


def _to_batch(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None]


def ssim(img, ref) -> float:
    """Structural similarity of ``img`` vs ``ref`` ((H, W, C) in [0, 1] or uint8), the paper convention.

    Gaussian window of 11 x 11, sigma 1.5, C1 = (0.01)^2, C2 = (0.03)^2, population statistics,
    only window positions fully inside the image (as Wang et al.'s reference code; scikit-image's
    ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``
    agrees), averaged over positions and then over channels. Returns NaN for images smaller than
    the window. (Training's ``train.losses.ssim`` pads by reflection instead: a loss must cover the
    border; values differ slightly.)
    """
    a, b = _pair(img, ref)
    if min(a.shape[:2]) < SSIM_WINDOW:
        return math.nan
    return float(_ssim_and_cs(_to_batch(a), _to_batch(b))[0])


def ms_ssim_scales(height: int, width: int, max_scales: int = len(MS_SSIM_WEIGHTS)) -> int:
    """How many MS-SSIM scales fit: the coarsest scale (side / 2^(M-1)) must hold an 11-px window.

    256 px and up: all 5; 128 px: 4; 64 px: 3; below 11 px: 0 (not computable).
    """
    side = min(height, width)
    scales = 0
    while scales < max_scales and side // (2 ** scales) >= SSIM_WINDOW:
        scales += 1
    return scales


def ms_ssim(img, ref, scales: int | None = None) -> float:
    """Multi-scale SSIM (Wang, Simoncelli, Bovik 2003) of (H, W, C) images in [0, 1] or uint8.

    ``prod_{j<M} cs_j^{w_j} * ssim_M^{w_M}`` over M scales (2x2 average pooling between scales),
    with the standard weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333). Images too small for 5
    scales use the first ``M = ms_ssim_scales(H, W)`` weights renormalised to sum 1 (so the value
    stays on the same [0, 1] scale; it is then not the 5-scale figure of papers: report M). Negative
    terms are clamped to 0. Returns NaN below 11 px.
    """
    a, b = _pair(img, ref)
    m = ms_ssim_scales(*a.shape[:2]) if scales is None else int(scales)
    if m < 1 or m > ms_ssim_scales(*a.shape[:2]):
        return math.nan
    weights = np.array(MS_SSIM_WEIGHTS[:m]) / sum(MS_SSIM_WEIGHTS[:m])
    x, y = _to_batch(a), _to_batch(b)
    value = 1.0
    for j in range(m):
        s, cs = _ssim_and_cs(x, y)
        term = float(s) if j == m - 1 else float(cs)
        value *= max(term, 0.0) ** weights[j]
        if j < m - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return float(value)


# ---------------------------------------------------------------------------------------------- motion


def lmd_per_frame(landmarks_a: np.ndarray, landmarks_b: np.ndarray, indices: Sequence[int] | None = None) -> np.ndarray:
    """Mean Euclidean distance (x, y) between corresponding landmarks of each frame.

    Args:
        landmarks_a, landmarks_b: (T, N, >=2) pixel coordinates (NaN where the face was not found).
        indices: which of the N landmarks (default all).
    Returns:
        (T,) pixels; NaN for frames missing in either input.
    """
    a = np.asarray(landmarks_a, dtype=np.float64)
    b = np.asarray(landmarks_b, dtype=np.float64)
    if a.ndim != 3 or a.shape[2] < 2 or a.shape[:2] != b.shape[:2]:
        raise TalksplatError(f"landmarks must be two (T, N, 2) arrays of equal T and N, got {a.shape} and {b.shape}")
    if indices is not None:
        a, b = a[:, list(indices)], b[:, list(indices)]
    return np.linalg.norm(a[..., :2] - b[..., :2], axis=-1).mean(axis=1)


def lmd(landmarks_a: np.ndarray, landmarks_b: np.ndarray, indices: Sequence[int] | None = None) -> float:
    """Landmark distance: :func:`lmd_per_frame` averaged over the frames present in both (NaN if none).

    No alignment is applied: the render and the ground truth share the camera and head pose, so a
    misplaced mouth counts. Units are the pixels of the images the landmarks were found in.
    """
    per_frame = lmd_per_frame(landmarks_a, landmarks_b, indices)
    ok = np.isfinite(per_frame)
    return float(per_frame[ok].mean()) if ok.any() else math.nan


def expression_error(core_a: np.ndarray, core_b: np.ndarray, names: Sequence[str] | None = None) -> dict:
    """Mean absolute difference of expression coefficients (T, K) between two clips (an AUE analogue).

    Frames with NaN in either input are skipped. Returns ``{"mean": float, "per_coefficient":
    {name: float}, "frames": int}`` (coefficients are in [0, 1], so the error is too).
    """
    a, b = np.asarray(core_a, np.float64), np.asarray(core_b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise TalksplatError(f"expression arrays must both be (T, K), got {a.shape} and {b.shape}")
    names = list(names) if names is not None else [str(k) for k in range(a.shape[1])]
    ok = np.all(np.isfinite(a), axis=1) & np.all(np.isfinite(b), axis=1)
    if not ok.any():
        return {"mean": math.nan, "per_coefficient": dict.fromkeys(names, math.nan), "frames": 0}
    err = np.abs(a[ok] - b[ok]).mean(axis=0)
    return {"mean": float(err.mean()), "per_coefficient": {n: float(e) for n, e in zip(names, err, strict=True)},
            "frames": int(ok.sum())}


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two (T,) series over the entries finite in both (NaN if < 3 or flat)."""
    a, b = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    if a.shape != b.shape:
        raise TalksplatError(f"series differ in length: {a.shape[0]} vs {b.shape[0]}")
    from talksplat.tracking.facemesh import nan_correlation

    r = nan_correlation(a, b)
    return math.nan if r is None else r


def lagged_correlation(a: np.ndarray, b: np.ndarray, max_lag: int = 10) -> tuple[int, float]:
    """The lag in -max_lag..max_lag frames maximising ``pearson(a[t], b[t + lag])`` and that correlation.

    ``lag > 0``: ``b`` happens later than ``a``. Returns (0, NaN) when nothing is computable.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    best = (0, math.nan)
    for lag in range(-max_lag, max_lag + 1):
        x, y = (a[:len(a) - lag], b[lag:]) if lag >= 0 else (a[-lag:], b[:len(b) + lag])
        r = pearson(x, y) if len(x) >= 3 else math.nan
        if np.isfinite(r) and (not np.isfinite(best[1]) or r > best[1]):
            best = (lag, r)
    return best


# ---------------------------------------------------------------------------------------------- audio


def audio_envelope(samples: np.ndarray, n_frames: int, sample_rate: int = SAMPLE_RATE, fps: float = FPS,
                   floor_db: float = -80.0) -> np.ndarray:
    """Loudness of each video frame's own audio: RMS of samples ``[t sr/fps, (t+1) sr/fps)`` in dBFS.

    Args:
        samples: (N,) mono float in [-1, 1]; zero-padded or trimmed to ``n_frames`` frames.
    Returns:
        (n_frames,) float64 dB, at least ``floor_db`` (silence).
    """
    hop = round(sample_rate / fps)
    x = np.zeros(n_frames * hop, np.float64)
    s = np.asarray(samples, np.float64).reshape(-1)[:x.size]
    x[:s.size] = s
    rms = np.sqrt(np.mean(x.reshape(n_frames, hop) ** 2, axis=1))
    return np.maximum(20.0 * np.log10(np.maximum(rms, 1e-12)), floor_db)


def av_sync(lip_landmarks: np.ndarray, samples: np.ndarray) -> dict:
    """Audio-visual offset and confidence of a clip from talksplat's own scorer (not SyncNet Sync-C).

    Wraps :func:`talksplat.features.sync_offset.estimate_offset` (per-lag lip-shape regression on
    log-mel; no weights). ``offset_frames > 0``: the audio lags the lips; a perfect render driven by
    its own audio should measure near the real video's offset. Clips under 10 s are never "reliable".

    Args:
        lip_landmarks: (T, K, >=2) lip points at 25 fps (NaN where the face was not found);
        samples: (N,) 16 kHz mono of the same clip.
    Returns:
        {"offset_frames", "confidence", "peak", "reliable", "reason", "scores" (31,)}
    """
    from talksplat.features.sync_offset import estimate_offset

    lips = np.asarray(lip_landmarks, np.float64)[..., :2]
    valid = np.all(np.isfinite(lips.reshape(len(lips), -1)), axis=1)
    if valid.sum() < 2:
        return {"offset_frames": None, "confidence": None, "peak": None, "reliable": False,
                "reason": "the face was not found in the frames", "scores": []}
    est = estimate_offset(lips, samples)
    if not np.any(est.scores):            # nothing was scored (too short or silent): no figures
        return {"offset_frames": None, "confidence": None, "peak": None, "reliable": False, "reason": est.reason,
                "scores": []}
    return {"offset_frames": int(est.offset_frames), "confidence": float(est.confidence), "peak": float(est.peak),
            "reliable": bool(est.reliable), "reason": est.reason, "scores": [float(s) for s in est.scores]}


# ---------------------------------------------------------------------------------------------- stability


def fill_gaps(x: np.ndarray) -> np.ndarray:
    """Linearly interpolate rows of ``x`` (T, D) that contain NaN (edges held). Needs >= 2 good rows."""
    x = np.asarray(x, np.float64)
    valid = np.all(np.isfinite(x), axis=1)
    if valid.all():
        return x
    if valid.sum() < 2:
        raise TalksplatError("the face was found in fewer than 2 frames; nothing to measure")
    t = np.arange(len(x))
    return np.stack([np.interp(t, t[valid], x[valid, d]) for d in range(x.shape[1])], axis=1)


@dataclass
class StabilityComponents:
    """Per-frame series of one nose trajectory (see :func:`stability_components` for definitions)."""

    motion_difference: np.ndarray       # (T-2,) |v_{t+1} - v_t|, px/frame
    magnitude_variability: np.ndarray   # (T-1-(w-1),) local std of |v_t| over w frames, px/frame
    high_frequency_power: np.ndarray    # (windows,) spectral power above the cutoff, px^2
    frames: int

    def raw(self) -> dict[str, float]:
        """The un-normalised means: M_d (px/frame), V_m (px/frame), H_f (px^2)."""
        return {"M_d": float(self.motion_difference.mean()), "V_m": float(self.magnitude_variability.mean()),
                "H_f": float(self.high_frequency_power.mean())}


@dataclass
class StabilityResult:
    """Stability of one video relative to the set it was scored with (higher = less stable)."""

    score: float                        # mean of the three normalised components, in [0, 1]
    normalised: dict[str, float]        # M_d, V_m, H_f each divided by its joint maximum
    raw: dict[str, float]               # the un-normalised means
    frames: int
    normalisers: dict[str, float] = field(default_factory=dict)   # the joint maxima used


def stability_components(track: np.ndarray, fps: float = FPS, cutoff_hz: float = STABILITY_CUTOFF_HZ,
                         fft_window: int = STABILITY_FFT_WINDOW,
                         variability_window: int = STABILITY_VARIABILITY_WINDOW) -> StabilityComponents:
    """The per-frame components of the GaussianFlameTalk stability score of a nose trajectory.

    With ``p_t`` (T, 2) the nose position in pixels (gaps interpolated), ``v_t = p_{t+1} - p_t``:

    - **M_d** (motion difference), per frame: ``d_t = |v_{t+1} - v_t|`` (how much the motion
      changes from one frame to the next), t = 0..T-3;
    - **V_m** (variability of motion magnitude), per frame: ``s_t = std(|v_t|, ..., |v_{t+w-1}|)``,
      the standard deviation of the speed over ``w = variability_window`` consecutive frames;
    - **H_f** (high-frequency FFT power), per window: ``h_k`` = the power of the trajectory above
      ``cutoff_hz`` in frames ``k .. k+W-1`` (``W = fft_window``, hop 1): each coordinate minus its
      linear trend, Hann-weighted, ``sum_{f >= cutoff} |FFT|^2 / sum(hann^2)``, summed over x and y.
      Clips shorter than W frames use one window of the whole clip.

    Args:
        track: (T, 2) pixels, T >= 8 (NaN rows = tracking gaps).
    """
    p = fill_gaps(np.asarray(track, np.float64).reshape(len(track), -1)[:, :2])
    n = len(p)
    if n < STABILITY_MIN_FRAMES:
        raise TalksplatError(f"a stability score needs at least {STABILITY_MIN_FRAMES} frames, got {n}")
    v = np.diff(p, axis=0)
    speed = np.linalg.norm(v, axis=1)
    difference = np.linalg.norm(np.diff(v, axis=0), axis=1)
    w = min(variability_window, len(speed))
    variability = np.lib.stride_tricks.sliding_window_view(speed, w).std(axis=1)
    win = min(fft_window, n)
    segments = np.lib.stride_tricks.sliding_window_view(p, win, axis=0)       # (K, 2, win)
    t = np.arange(win) - (win - 1) / 2
    slope = (segments * t).sum(axis=-1, keepdims=True) / (t @ t)
    detrended = segments - segments.mean(axis=-1, keepdims=True) - slope * t
    hann = np.hanning(win + 2)[1:-1]                                          # no zero end points
    spectrum = np.abs(np.fft.rfft(detrended * hann, axis=-1)) ** 2 / (hann @ hann)
    high = np.fft.rfftfreq(win, d=1.0 / fps) >= cutoff_hz
    power = spectrum[..., high].sum(axis=(-1, -2)) if high.any() else np.zeros(len(segments))
    return StabilityComponents(difference, variability, power, n)


def stability_scores(tracks: Sequence[np.ndarray], fps: float = FPS, cutoff_hz: float = STABILITY_CUTOFF_HZ,
                     fft_window: int = STABILITY_FFT_WINDOW,
                     variability_window: int = STABILITY_VARIABILITY_WINDOW) -> list[StabilityResult]:
    """GaussianFlameTalk stability scores of several nose trajectories (e.g. ours and the ground truth).

    Each component series of :func:`stability_components` is divided by its maximum over *all the
    given sequences together* and averaged over the sequence; the score is the mean of the three
    normalised components (0 = still, 1 = every frame as bad as the worst frame seen). Normalising
    by the joint maximum (not each video's own) keeps the scores of the videos comparable: scored
    alone, a steady jitter and a steady still head would both come out near 1. Pass one track to
    score a video on its own. Higher = less stable.
    """
    comps = [stability_components(t, fps, cutoff_hz, fft_window, variability_window) for t in tracks]
    keys = (("M_d", "motion_difference"), ("V_m", "magnitude_variability"), ("H_f", "high_frequency_power"))
    maxima = {key: max(float(getattr(c, attr).max()) for c in comps) for key, attr in keys}
    results = []
    for c in comps:
        normalised = {key: (float(getattr(c, attr).mean()) / maxima[key] if maxima[key] > 0 else 0.0)
                      for key, attr in keys}
        results.append(StabilityResult(float(np.mean(list(normalised.values()))), normalised, c.raw(), c.frames,
                                       dict(maxima)))
    return results


def stability_score(track: np.ndarray, *others: np.ndarray, **options) -> StabilityResult:
    """Stability of ``track`` (T, 2), normalised jointly with ``others`` (e.g. the ground truth's
    nose track); alone, each component is normalised by the track's own maximum. Options as
    :func:`stability_scores`."""
    return stability_scores([track, *others], **options)[0]


def trajectory_spectrum(track: np.ndarray, fps: float = FPS) -> tuple[np.ndarray, np.ndarray]:
    """Power spectrum of a (T, 2) trajectory over the whole clip (linear trend removed, Hann window,
    x and y powers summed). Returns (frequencies (F,) Hz, power (F,) px^2)."""
    p = fill_gaps(np.asarray(track, np.float64)[:, :2])
    n = len(p)
    t = np.arange(n) - (n - 1) / 2
    slope = (p * t[:, None]).sum(axis=0) / max(t @ t, 1e-12)
    detrended = p - p.mean(axis=0) - slope * t[:, None]
    hann = np.hanning(n + 2)[1:-1]
    power = (np.abs(np.fft.rfft(detrended * hann[:, None], axis=0)) ** 2).sum(axis=1) / (hann @ hann)
    return np.fft.rfftfreq(n, d=1.0 / fps), power


# ---------------------------------------------------------------------------------------------- eyes and mouth

# A blink: the eye aspect ratio falls below this fraction of the video's open-eye level (its median
# EAR: eyes are open most of the time). Relative to each video's own level, so a render whose eyes
# are drawn slightly narrower than the real ones is not counted as blinking more. FaceMesh
# under-reads closure (on the synthetic subject a shut eye reads ~0.5 of the open EAR), so 0.5 missed
# 3 of its 5 blinks; 0.6 found all 5 and 13 on the real Obama clip (0.65: 14, 0.7: 16).
BLINK_CLOSURE = 0.6
BLINK_MERGE_GAP = 2            # closures separated by at most this many open frames are one blink
EAR_PERCENTILE_LOW = 5


def blink_runs(ear: np.ndarray, closure: float = BLINK_CLOSURE, merge_gap: int = BLINK_MERGE_GAP) -> list[tuple[int, int]]:
    """The blinks of an eye-aspect-ratio series ``ear`` (T,) as (first, last) frame pairs.

    Frames below ``closure`` x the median EAR are closed; runs of closed frames separated by at most
    ``merge_gap`` open frames are one blink (tracking noise on a half-closed lid). NaN (no face) is open.
    """
    x = np.asarray(ear, np.float64)
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return []
    closed = np.isfinite(x) & (x < closure * float(np.median(finite)))
    runs: list[tuple[int, int]] = []
    for t in np.flatnonzero(closed):
        if runs and t - runs[-1][1] <= merge_gap + 1:
            runs[-1] = (runs[-1][0], int(t))
        else:
            runs.append((int(t), int(t)))
    return runs


def blink_statistics(ear: np.ndarray, fps: float = FPS, closure: float = BLINK_CLOSURE) -> dict:
    """Blinks per minute and the EAR distribution (median, 5th percentile, minimum) of a series (T,).

    NaN frames (no face) are left out of the distribution but count towards the duration."""
    x = np.asarray(ear, np.float64)
    finite = x[np.isfinite(x)]
    minutes = len(x) / fps / 60.0
    if finite.size == 0:
        return {"blinks": 0, "blinks_per_minute": None, "ear_median": None, "ear_p5": None, "ear_min": None,
                "closed_threshold": None, "frames": len(x), "frames_with_face": 0, "seconds": minutes * 60}
    runs = blink_runs(x, closure)
    median = float(np.median(finite))
    return {"blinks": len(runs), "blinks_per_minute": len(runs) / minutes if minutes > 0 else None,
            "ear_median": median, "ear_p5": float(np.percentile(finite, EAR_PERCENTILE_LOW)),
            "ear_min": float(finite.min()), "closed_threshold": closure * median,
            "frames": len(x), "frames_with_face": int(finite.size), "seconds": minutes * 60}


def masked_psnr(img, ref, mask: np.ndarray, max_db: float | None = PSNR_CAP_DB) -> float:
    """PSNR over the pixels where ``mask`` (H, W) is true (all channels); NaN for an empty mask."""
    a, b = _pair(img, ref)
    m = np.asarray(mask, bool)
    if not m.any():
        return math.nan
    mse = float(np.mean((a[m] - b[m]) ** 2))
    value = math.inf if mse == 0.0 else -10.0 * math.log10(mse)
    return value if max_db is None else min(value, float(max_db))


LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])    # Rec. 601 luma of RGB


def gradient_energy(img, mask: np.ndarray) -> float:
    """Mean squared Sobel gradient magnitude of the luminance inside ``mask`` (H, W): how much fine
    detail (teeth edges, lip lines) a region holds; a blurred region has less. NaN for an empty mask."""
    import cv2

    a = as_float_image(img)
    luma = a.mean(axis=2) if a.shape[2] != 3 else a @ LUMA_WEIGHTS
    gx = cv2.Sobel(luma, cv2.CV_64F, 1, 0, ksize=3) / 8.0      # /8: per-pixel intensity difference
    gy = cv2.Sobel(luma, cv2.CV_64F, 0, 1, ksize=3) / 8.0
    m = np.asarray(mask, bool)
    return float(np.mean(gx[m] ** 2 + gy[m] ** 2)) if m.any() else math.nan


def eye_region_mask(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the two eye boxes of one frame's (478, 2+) landmarks in pixels of ``shape`` (the
    boxes of the training loss ``engine.losses.eye_boxes``: both lids, open or shut)."""
    mask = np.zeros(shape, bool)
    for rows, cols in eye_boxes(landmarks, *shape):
        mask[rows, cols] = True
    return mask


def mouth_interior_mask(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the inner-lip polygon of one frame's (478, 2+) landmarks in pixels of ``shape``."""
    import cv2

    from talksplat.core.landmarks import INNER_LIPS

    mask = np.zeros(shape, np.uint8)
    pts = np.asarray(landmarks, np.float64)[list(INNER_LIPS), :2]
    if np.all(np.isfinite(pts)):
        cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


# ---------------------------------------------------------------------------------------------- teeth
# Teeth are the brightest thing inside the lips: a pixel of the inner-lip polygon brighter than this
# luma (0..1) counts as teeth. On the real Obama and Andrew clips (held-out frames) the polygon's
# bright share is 0.06 and 0.14 below the median opening and 0.24 and 0.53 on the most open tenth. A
# fixed threshold: it suits evenly lit footage, not a face in shadow.
TEETH_LUMA = 0.55
# Mouth-opening bins for the teeth comparison: the reference's opening percentiles (the top bins are
# where the real frames show teeth).
TEETH_OPENING_PERCENTILES = (50, 75, 90)


def teeth_share(img, mask: np.ndarray, luma_threshold: float = TEETH_LUMA) -> float:
    """Fraction of the pixels inside ``mask`` (H, W) brighter than ``luma_threshold``: how much of the
    mouth opening shows teeth. NaN for an empty mask."""
    a = as_float_image(img)
    m = np.asarray(mask, bool)
    if not m.any():
        return math.nan
    luma = a[m] @ LUMA_WEIGHTS if a.shape[2] == 3 else a[m].mean(axis=1)
    return float((luma > luma_threshold).mean())


def teeth_by_opening(open_ours: np.ndarray, teeth_ours: np.ndarray, open_ref: np.ndarray,
                     teeth_ref: np.ndarray, paired: bool = False,
                     percentiles: Sequence[float] = TEETH_OPENING_PERCENTILES) -> dict:
    """Teeth shares of two videos compared at equal mouth opening.

    The bins are the reference's opening percentiles (e.g. below its median, median to 75th, 75th to
    90th, the most open tenth). Per bin: the reference's mean teeth share over its frames in the bin;
    ours over *its own* frames in the bin (does the render show teeth when it opens as wide?); and,
    for ``paired`` videos (self-reconstruction: frame i of both is the same moment), ours over the
    reference's frames in the bin (does the render show teeth when the real frame does? This also
    needs the render to open when the real mouth opens, i.e. lip sync). Frames without an opening or
    a teeth share (no face, lips shut) are left out.
    """
    o_ours, t_ours = np.asarray(open_ours, np.float64), np.asarray(teeth_ours, np.float64)
    o_ref, t_ref = np.asarray(open_ref, np.float64), np.asarray(teeth_ref, np.float64)
    valid_ref = np.isfinite(o_ref)
    if valid_ref.sum() < 2:
        return {"bins": [], "note": "too few reference frames with a tracked mouth"}
    edges = [-math.inf, *np.percentile(o_ref[valid_ref], list(percentiles)).tolist(), math.inf]

    def mean_in(values: np.ndarray, inside: np.ndarray) -> tuple[float | None, int]:
        x = values[inside & np.isfinite(values)]
        return (float(x.mean()) if x.size else None), int(x.size)

    bins = []
    for low, high in itertools.pairwise(edges):
        in_ref, in_ours = (o_ref >= low) & (o_ref < high), (o_ours >= low) & (o_ours < high)
        row = {"opening_from": None if math.isinf(low) else low, "opening_to": None if math.isinf(high) else high}
        row["reference"], row["reference_frames"] = mean_in(t_ref, in_ref)
        row["ours_at_own_opening"], row["ours_frames"] = mean_in(t_ours, in_ours)
        if paired and len(t_ours) == len(t_ref):
            row["ours_on_reference_frames"], _ = mean_in(t_ours, in_ref)
        bins.append(row)
    return {"bins": bins, "percentiles": list(percentiles), "luma_threshold": TEETH_LUMA}
