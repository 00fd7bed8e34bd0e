"""Audio primitives shared by every audio feature: frame timing, loading, log-mel, offset shifts, caching.

The bottom of ``talksplat.features``: the extractors (phones, the sync encoder, the pretrained
encoders) and the dispatcher over them (:mod:`talksplat.features.registry`, :class:`AudioFeatures`)
build on this module, which imports none of them.

Timing convention, used by every audio feature of talksplat:

- audio is 16 kHz mono float32; video frame ``t`` covers ``[t / 25, (t + 1) / 25)`` s, i.e.
  samples ``[640 t, 640 (t + 1))``;
- a clip of ``N`` samples has :func:`num_frames_for_samples` ``(N)`` = ``ceil(N / 640)`` frames
  (a trailing partial frame of 5 ms or less is dropped: that is container padding, not a frame);
- log-mel steps are 10 ms apart (25 ms Hann windows); step ``j`` is centred at ``(j + 0.5) * 10`` ms,
  so frame ``t`` owns steps ``4t .. 4t + 3`` and its 16-step window is steps ``4t - 6 .. 4t + 9``
  (centred on the frame's centre ``(t + 0.5) / 25`` s). Audio before 0 or after the end is silence.

Features by name: :mod:`talksplat.features.registry`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

# FPS, SAMPLE_RATE and SAMPLES_PER_FRAME are defined in talksplat.core.constants; they stay importable
# from here because every feature module and many callers read them from this module.
from talksplat.core.constants import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from talksplat.errors import TalksplatError, UsageError
from talksplat.io.atomic import atomic_path, write_bytes_atomic
from talksplat.io.audio import load_audio

PARTIAL_FRAME_TOLERANCE = SAMPLE_RATE // 200    # 5 ms: trailing remainders up to this are not a frame

MEL_BANDS = 80
MEL_WINDOW = 400                                # 25 ms
MEL_HOP = 160                                   # 10 ms
MEL_FFT = 512
MEL_FMIN, MEL_FMAX = 20.0, 7600.0               # speech band; avoids the resampler's roll-off at 8 kHz
LOG_FLOOR = 1e-8                                # power floor: ~-80 dB below a full-scale tone
STEPS_PER_FRAME = SAMPLES_PER_FRAME // MEL_HOP   # 4 mel steps per video frame
WINDOW_STEPS = 16                               # the peers' DeepSpeech/wav2vec window length
WINDOW_LEAD = (WINDOW_STEPS - STEPS_PER_FRAME) // 2             # 6 steps before the frame's own 4

MIN_SECONDS = 0.2                               # 5 frames: the sync window; less is not usable speech
SILENCE_PEAK = 1e-4                             # -80 dBFS: below this the file is silent

FEATURE_VERSION = 1                             # bump when any default feature's definition changes


# ----------------------------------------------------------------------------------------------------
# Loading and frame alignment


def num_frames_for_samples(num_samples: int) -> int:
    """Video frames (25 fps) covered by ``num_samples`` samples at 16 kHz: ceil(N / 640), minus a
    trailing partial frame of 5 ms or less. The single definition used by every feature."""
    if num_samples <= 0:
        return 0
    return max(1, math.ceil((num_samples - PARTIAL_FRAME_TOLERANCE) / SAMPLES_PER_FRAME))


def num_frames_for_duration(seconds: float) -> int:
    """Video frames for a clip of ``seconds`` (same rule as :func:`num_frames_for_samples`)."""
    return num_frames_for_samples(round(seconds * SAMPLE_RATE))


def validate_samples(samples: np.ndarray, source: str = "audio") -> np.ndarray:
    """Check decoded audio is usable for features; returns it as (N,) float32.

    Raises TalksplatError for empty, too short (< 0.2 s) or silent (peak < -80 dBFS) audio.
    """
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    if samples.size == 0:
        raise UsageError(f"{source} contains no audio samples; give a file with speech in it")
    if samples.size < MIN_SECONDS * SAMPLE_RATE:
        raise UsageError(f"{source} is only {samples.size / SAMPLE_RATE:.3f} s long; "
                         f"audio features need at least {MIN_SECONDS} s")
    if not np.all(np.isfinite(samples)):
        raise UsageError(f"{source} contains NaN/inf samples; re-encode the file")
    if float(np.max(np.abs(samples))) < SILENCE_PEAK:
        raise UsageError(f"{source} is silent (peak below -80 dBFS); check the file has sound")
    return samples


def load_audio_16k(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode any audio/video file (wav/flac/ogg/mp3/m4a/mp4, any rate, stereo) to validated
    16 kHz mono float32 (N,)."""
    return validate_samples(load_audio(path, SAMPLE_RATE), source=str(path))


def fit_to_frames(samples: np.ndarray, n_frames: int) -> np.ndarray:
    """Zero-pad or trim ``samples`` (N,) to exactly ``n_frames * 640`` samples (n_frames * 640,)."""
    target = n_frames * SAMPLES_PER_FRAME
    out = np.zeros(target, np.float32)
    n = min(target, samples.size)
    out[:n] = samples[:n]
    return out


def frame_samples(samples: np.ndarray, n_frames: int | None) -> tuple[np.ndarray, int]:
    """Samples fitted to whole frames and the frame count (``n_frames`` or derived from N)."""
    if n_frames is None:
        n_frames = num_frames_for_samples(samples.size)
    if n_frames <= 0:
        raise TalksplatError(f"n_frames must be positive (got {n_frames})")
    return fit_to_frames(samples, n_frames), n_frames


def shift_audio(audio: np.ndarray, offset_frames: int, sample_rate: int = SAMPLE_RATE,
                fps: float = FPS) -> np.ndarray:
    """Correct an audio-video offset: move ``audio`` (N,) earlier by ``offset_frames`` video frames
    (later if negative), keeping its length; silence fills the gap. Returns (N,) float32.

    The one definition used by offset estimation and ``prepare`` (they used to round differently
    when ``sample_rate / fps`` is not a whole number). The shift is rounded to the nearest sample.
    Sign: ``offset_frames > 0`` means the audio lags the video (:func:`sync_offset.estimate_offset`).
    """
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    shift = round(offset_frames * sample_rate / fps)
    out = np.zeros_like(audio)
    kept = audio.size - abs(shift)          # samples that stay inside the clip
    if kept > 0 and shift >= 0:
        out[:kept] = audio[shift:]
    elif kept > 0:
        out[-shift:] = audio[:kept]
    return out


# ----------------------------------------------------------------------------------------------------
# Log-mel


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@lru_cache(maxsize=4)
def mel_filterbank(n_bands: int = MEL_BANDS, n_fft: int = MEL_FFT, sample_rate: int = SAMPLE_RATE,
                   fmin: float = MEL_FMIN, fmax: float = MEL_FMAX) -> np.ndarray:
    """Triangular HTK-mel filters, area-normalised (Slaney), (n_fft // 2 + 1, n_bands) float32."""
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_bands + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - lower) / (centre - lower)
    falling = (upper - freqs[None, :]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (upper - lower))
    return weights.T.astype(np.float32)


def log_mel_steps(samples: np.ndarray, first_step: int, num_steps: int) -> np.ndarray:
    """Natural-log mel power of 10 ms steps ``first_step .. first_step + num_steps - 1``.

    Step ``j`` is the 25 ms Hann window centred on sample ``160 j + 80``; samples outside
    ``[0, N)`` count as silence.

    Returns:
        (num_steps, 80) float32
    """
    half = MEL_WINDOW // 2
    start = first_step * MEL_HOP + MEL_HOP // 2 - half          # first window's first sample
    stop = start + (num_steps - 1) * MEL_HOP + MEL_WINDOW
    padded = np.zeros(stop - start, np.float32)
    lo, hi = max(start, 0), min(stop, samples.size)
    if hi > lo:
        padded[lo - start:hi - start] = samples[lo:hi]
    frames = np.lib.stride_tricks.sliding_window_view(padded, MEL_WINDOW)[::MEL_HOP][:num_steps]
    window = np.hanning(MEL_WINDOW + 1)[:-1].astype(np.float32)   # periodic Hann
    spectrum = np.fft.rfft(frames * window, n=MEL_FFT, axis=1)
    power = (spectrum.real ** 2 + spectrum.imag ** 2).astype(np.float32)
    return np.log(power @ mel_filterbank() + LOG_FLOOR).astype(np.float32)


def step_windows(steps: np.ndarray, n_frames: int) -> np.ndarray:
    """Cut per-step features covering steps ``-6 .. 4 n_frames + 5`` into 16-step frame windows.

    Args:
        steps: (4 n_frames + 12, D), row ``i`` = step ``i - 6``.
    Returns:
        (n_frames, 16, D): window ``t`` = steps ``4t - 6 .. 4t + 9``.
    """
    index = np.arange(n_frames)[:, None] * STEPS_PER_FRAME + np.arange(WINDOW_STEPS)[None, :]
    return steps[index]


def window_step_range(n_frames: int) -> tuple[int, int]:
    """(first step, number of steps) that the 16-step windows of ``n_frames`` frames need."""
    return -WINDOW_LEAD, n_frames * STEPS_PER_FRAME + WINDOW_STEPS - STEPS_PER_FRAME


def mel_windows(samples: np.ndarray, n_frames: int | None = None) -> np.ndarray:
    """Log-mel windows centred on each video frame.

    Args:
        samples: (N,) float32 16 kHz mono.
        n_frames: frames to produce (default :func:`num_frames_for_samples` (N)); audio is
            zero-padded or trimmed to ``n_frames * 640`` samples.
    Returns:
        (n_frames, 16, 80) float32 natural-log mel power.
    """
    samples, n_frames = frame_samples(samples, n_frames)
    first, count = window_step_range(n_frames)
    return step_windows(log_mel_steps(samples, first, count), n_frames)


# ----------------------------------------------------------------------------------------------------
# Caching


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of the file's bytes (content, not name or mtime, decides whether a cache is valid)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class CacheKey:
    """What a cached feature file depends on; stored beside it as JSON."""

    feature: str
    audio_sha256: str
    n_frames: int
    version: int = FEATURE_VERSION

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def cache_valid(npy: Path, meta: Path, key: CacheKey, shape: tuple[int, ...]) -> bool:
    if not (npy.is_file() and meta.is_file()):
        return False
    try:
        stored = json.loads(meta.read_text())
        array = np.load(npy, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return False
    return stored == key.to_json() and tuple(array.shape) == shape and array.dtype == np.float32


def write_cached(npy: Path, meta: Path, key: CacheKey, array: np.ndarray) -> None:
    with atomic_path(npy) as tmp:
        np.save(tmp, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    write_bytes_atomic(meta, (json.dumps(key.to_json(), indent=1) + "\n").encode())
