"""Per-frame driving curves: mouth opening from the speech, blinks, brow raises and head motion.

Frame t covers audio samples [t * sr / fps, (t + 1) * sr / fps). All randomness comes from the
``numpy.random.Generator`` passed in (no global RNG).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from talksplat.core.constants import FPS, SAMPLE_RATE
from talksplat.features.phones import DECODER_OPTIONS

# Mouth-opening gain of each phone class (CMU phone set of pocketsphinx's en-us model).
PHONE_GAIN: dict[str, float] = {
    "AA": 1.0, "AE": 0.95, "AH": 0.8, "AO": 0.95, "AW": 0.95, "AY": 0.95,
    "EH": 0.7, "ER": 0.55, "EY": 0.65, "IH": 0.55, "IY": 0.45, "OW": 0.7, "OY": 0.75, "UH": 0.5, "UW": 0.45,
    "W": 0.35, "R": 0.4, "L": 0.5, "Y": 0.4, "HH": 0.6,
    "T": 0.3, "D": 0.3, "K": 0.35, "G": 0.35, "N": 0.3, "NG": 0.35, "S": 0.25, "Z": 0.25, "SH": 0.3,
    "ZH": 0.3, "CH": 0.3, "JH": 0.3, "TH": 0.35, "DH": 0.35,
    "F": 0.1, "V": 0.1,
    "B": 0.0, "P": 0.0, "M": 0.0,
}
BILABIALS = frozenset({"B", "P", "M"})
DEFAULT_GAIN = 0.7   # when phones are unknown


@dataclass(frozen=True)
class Phone:
    """A phone segment: CMU label (or SIL / +NSN+ ...) and its time span in seconds."""

    label: str
    start: float
    end: float


def decode_phones(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> list[Phone]:
    """Phone-loop decoding with pocketsphinx's bundled en-us model (offline, ~0.05x real time).

    audio: (N,) float32 mono at 16 kHz. Returns [] if pocketsphinx is unavailable or fails.
    """
    if sample_rate != SAMPLE_RATE or audio.size == 0:   # the en-us model is 16 kHz, as talksplat
        return []
    try:
        from pocketsphinx import Decoder, get_model_path
    except ImportError:  # pragma: no cover - it is a declared dependency
        return []
    model = get_model_path()
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    try:
        decoder = Decoder(hmm=os.path.join(model, "en-us", "en-us"),
                          allphone=os.path.join(model, "en-us", "en-us-phone.lm.bin"),
                          loglevel="FATAL", **DECODER_OPTIONS)   # the same decoder as the phones feature
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        segs = list(decoder.seg())
    except Exception:  # noqa: BLE001 - phones are an optional refinement of the loudness curve
        return []
    fps = 100.0  # pocketsphinx frame rate
    return [Phone(s.word, s.start_frame / fps, (s.end_frame + 1) / fps) for s in segs]


def frame_rms_db(audio: np.ndarray, sample_rate: int, fps: int, num_frames: int) -> np.ndarray:
    """(T,) RMS level in dBFS of each frame's audio window [t/fps, (t+1)/fps)."""
    edges = (np.arange(num_frames + 1) * sample_rate) // fps
    out = np.empty(num_frames, np.float64)
    sq = np.concatenate([[0.0], np.cumsum(audio.astype(np.float64) ** 2)])
    for t in range(num_frames):
        a, b = min(edges[t], audio.size), min(edges[t + 1], audio.size)
        out[t] = (sq[b] - sq[a]) / max(b - a, 1)
    return 10.0 * np.log10(out + 1e-10)


def loudness(rms_db: np.ndarray) -> np.ndarray:
    """(T,) speech loudness in [0, 1]: 0 at the noise floor (+6 dB), 1 at the loud peaks."""
    if rms_db.size == 0:
        return rms_db.copy()
    floor = float(np.percentile(rms_db, 10))
    peak = float(np.percentile(rms_db, 97))
    span = max(peak - floor - 6.0, 6.0)
    out = np.clip((rms_db - floor - 6.0) / span, 0.0, 1.0)
    out[rms_db < -70.0] = 0.0
    return out


def frame_phones(phones: list[Phone], fps: int, num_frames: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per frame: the dominant phone label, the overlap-weighted mouth gain (T,) and a (T,)
    bool that is True where a bilabial (B/P/M) covers at least half the frame."""
    labels = ["" for _ in range(num_frames)]
    gain = np.full(num_frames, DEFAULT_GAIN)
    closed = np.zeros(num_frames, bool)
    if not phones:
        return labels, gain, closed
    acc = np.zeros(num_frames)
    cover = np.zeros(num_frames)
    best = np.zeros(num_frames)
    bil = np.zeros(num_frames)
    dt = 1.0 / fps
    for ph in phones:
        g = PHONE_GAIN.get(ph.label, 0.0)
        t0 = max(int(np.floor(ph.start * fps)), 0)
        t1 = min(int(np.ceil(ph.end * fps)), num_frames)
        for t in range(t0, t1):
            ov = min(ph.end, (t + 1) * dt) - max(ph.start, t * dt)
            if ov <= 0:
                continue
            acc[t] += g * ov
            cover[t] += ov
            if ph.label in BILABIALS:
                bil[t] += ov
            if ov > best[t]:
                best[t] = ov
                labels[t] = ph.label
    has = cover > 0
    gain[has] = acc[has] / cover[has]
    closed = bil >= 0.5 * dt
    return labels, gain, closed


def mouth_track(rms_db: np.ndarray, phones: list[Phone], fps: int, lead_frames: float) -> tuple[np.ndarray, list[str]]:
    """Mouth opening (T,) in [0, 1] from loudness and phone classes, leading the sound by
    ``lead_frames`` frames; also the per-frame phone labels."""
    n = rms_db.size
    loud = loudness(rms_db)
    labels, gain, closed = frame_phones(phones, fps, n)
    target = gain * loud ** 0.6
    sig = 0.8 * fps / FPS
    m = gaussian_filter1d(target, sig, mode="nearest") if n > 1 else target
    m = np.where(closed, 0.12 * m, m)
    m = gaussian_filter1d(m, 0.5 * fps / FPS, mode="nearest") if n > 1 else m
    m = 0.72 * m / max(float(np.percentile(m, 99)) if n else 1.0, 0.5)
    t = np.arange(n, dtype=np.float64)
    m = np.interp(t + lead_frames, t, m)   # the mouth moves before the sound it makes
    return np.clip(m, 0.0, 1.0), labels


def _blink_shape(dt: np.ndarray) -> np.ndarray:
    """Eyelid closure vs time since blink onset (s): 80 ms down, 40 ms shut, 180 ms up."""
    out = np.zeros_like(dt)
    a = (dt >= 0) & (dt < 0.08)
    out[a] = np.sin(0.5 * np.pi * dt[a] / 0.08)
    out[(dt >= 0.08) & (dt < 0.12)] = 1.0
    c = (dt >= 0.12) & (dt < 0.30)
    out[c] = 0.5 * (1 + np.cos(np.pi * (dt[c] - 0.12) / 0.18))
    return out


def blink_track(num_frames: int, fps: int, rng: np.random.Generator,
                interval: tuple[float, float] = (2.0, 6.0)) -> tuple[np.ndarray, np.ndarray]:
    """Blink amounts (T,) for the subject's right and left eye; onsets every ``interval`` s."""
    times = (np.arange(num_frames) + 0.5) / fps
    right = np.zeros(num_frames)
    left = np.zeros(num_frames)
    onset = rng.uniform(0.4, min(interval[0], 2.0))
    duration = num_frames / fps
    while onset < duration:
        shape = _blink_shape(times - onset)
        depth = rng.uniform(0.92, 1.0)
        right = np.maximum(right, depth * shape)
        left = np.maximum(left, depth * rng.uniform(0.94, 1.0) * shape)
        onset += rng.uniform(*interval)
    return right, left


def brow_track(num_frames: int, fps: int, rng: np.random.Generator, loud: np.ndarray) -> np.ndarray:
    """Occasional brow raises (T,) in [0, 1], each starting near a rise of loudness."""
    times = (np.arange(num_frames) + 0.5) / fps
    out = np.zeros(num_frames)
    rise = np.diff(gaussian_filter1d(loud, 2.0), prepend=loud[:1]) if num_frames > 1 else np.zeros(num_frames)
    t = rng.uniform(1.0, 4.0)
    duration = num_frames / fps
    while t < duration:
        amp = rng.uniform(0.35, 1.0)
        hold = rng.uniform(0.3, 1.0)
        lo, hi = max(int((t - 0.4) * fps), 0), min(int((t + 0.4) * fps) + 1, num_frames)
        onset = (lo + int(np.argmax(rise[lo:hi]))) / fps if hi > lo else t
        dt = times - onset
        up = np.clip(dt / 0.15, 0, 1)
        down = np.clip((dt - 0.15 - hold) / 0.3, 0, 1)
        shape = np.where(dt < 0, 0.0, 0.5 * (1 - np.cos(np.pi * up)) * 0.5 * (1 + np.cos(np.pi * down)))
        out = np.maximum(out, amp * shape)
        t += rng.uniform(2.5, 7.0)
    return out


def _smooth_noise(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    """(n,) Gaussian-filtered white noise with unit standard deviation (in expectation)."""
    pad = int(4 * sigma) + 1
    white = rng.standard_normal(n + 2 * pad)
    smooth = gaussian_filter1d(white, sigma, mode="wrap")[pad:pad + n]
    return smooth * np.sqrt(2.0 * np.sqrt(np.pi) * sigma)


@dataclass(frozen=True)
class HeadMotion:
    """Head rotation relative to the rest pose (radians, head axes) and translation (mm, camera)."""

    pitch: np.ndarray   # (T,)
    yaw: np.ndarray     # (T,)
    roll: np.ndarray    # (T,)
    shift_mm: np.ndarray  # (T, 3)


def head_track(num_frames: int, fps: int, rng: np.random.Generator, loud: np.ndarray,
               amount: float = 1.0) -> HeadMotion:
    """Small smooth head motion: drifting yaw/pitch/roll of a few degrees, nods with speech."""
    s = fps / FPS                 # durations below were tuned at the default rate
    deg = np.pi / 180.0
    yaw = 2.2 * _smooth_noise(rng, num_frames, 20 * s) + 1.5 * _smooth_noise(rng, num_frames, 60 * s)
    pitch = 1.5 * _smooth_noise(rng, num_frames, 15 * s) + 1.0 * _smooth_noise(rng, num_frames, 50 * s)
    roll = 1.2 * _smooth_noise(rng, num_frames, 25 * s)
    if num_frames > 1:
        nod = gaussian_filter1d(loud, 3 * s) - float(np.mean(loud))
        pitch = pitch + 2.0 * nod
    shift = np.stack([3.0 * _smooth_noise(rng, num_frames, 30 * s),
                      2.0 * _smooth_noise(rng, num_frames, 30 * s),
                      6.0 * _smooth_noise(rng, num_frames, 40 * s)], axis=1)
    lim = np.array([7.0, 6.0, 4.0])   # degrees: yaw, pitch, roll
    yaw, pitch, roll = (np.clip(a, -m, m) for a, m in zip((yaw, pitch, roll), lim, strict=True))
    return HeadMotion(pitch=amount * pitch * deg, yaw=amount * yaw * deg, roll=amount * roll * deg,
                      shift_mm=amount * np.clip(shift, -15.0, 15.0))
