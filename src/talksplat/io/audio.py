"""Audio loading and saving through PyAV: any container/codec FFmpeg reads, resampled to mono float32."""

from __future__ import annotations

import os
import wave
from pathlib import Path

import av
import numpy as np

from talksplat.core.constants import SAMPLE_RATE
from talksplat.errors import UsageError
from talksplat.io.atomic import atomic_path
from talksplat.io.paths import require_file

DEFAULT_SAMPLE_RATE = SAMPLE_RATE   # what every audio feature expects


def load_audio(path: str | os.PathLike[str], sample_rate: int = DEFAULT_SAMPLE_RATE,
               stream_index: int = 0) -> np.ndarray:
    """Decode the audio of ``path`` (wav/flac/ogg/mp3/m4a/mp4/...) to mono at ``sample_rate``.

    Returns:
        samples: (N,) float32 in [-1, 1]; N ~= duration * sample_rate. Channels are averaged.
    """
    path = require_file(path, "audio")
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise UsageError(f"cannot open {path} as audio/video: {exc}") from exc
    with container:
        if len(container.streams.audio) <= stream_index:
            raise UsageError(f"{path} has no audio stream")
        stream = container.streams.audio[stream_index]
        declared = (float(stream.duration * stream.time_base)
                    if stream.duration is not None and stream.time_base is not None else None)
        # Resample keeping the channels, then average them ourselves: FFmpeg's own downmix
        # scales a centred stereo signal by sqrt(2).
        resampler: av.AudioResampler | None = None
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                if resampler is None:
                    resampler = av.AudioResampler(format="fltp", layout=frame.layout, rate=sample_rate)
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().mean(axis=0))
            if resampler is not None:
                for out in resampler.resample(None):
                    chunks.append(out.to_ndarray().mean(axis=0))
        except av.FFmpegError as exc:
            raise UsageError(f"cannot decode the audio of {path}: {exc}") from exc
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    samples = np.concatenate(chunks).astype(np.float32, copy=False)
    if declared is not None:
        # Encoders pad the last frame (AAC: up to 1024 samples); the container's declared
        # duration says where the real signal ends. Trim only such small excesses.
        expected = round(declared * sample_rate)
        if 0 < expected < samples.size <= expected + int(0.15 * sample_rate):
            samples = samples[:expected]
    return np.clip(samples, -1.0, 1.0)


def save_wav(path: str | os.PathLike[str], samples: np.ndarray,
             sample_rate: int = DEFAULT_SAMPLE_RATE) -> Path:
    """Write mono ``samples`` (N,) float in [-1, 1] as 16-bit PCM WAV, atomically."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    with atomic_path(path) as tmp, wave.open(str(tmp), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(int(sample_rate))
        wav.writeframes(pcm.tobytes())
    return Path(path)


def fit_length(samples: np.ndarray, num_samples: int, fade: int = 160) -> np.ndarray:
    """Trim or loop ``samples`` (N,) to exactly ``num_samples``, with short fades at the cuts.

    Looping appends the clip again after a short silence; ``fade`` samples (10 ms at 16 kHz) of
    fade-in/out avoid clicks where the clip is cut.

    Returns:
        (num_samples,) float32
    """
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    if num_samples <= 0:
        return np.zeros(0, dtype=np.float32)
    if samples.size == 0:
        return np.zeros(num_samples, dtype=np.float32)
    out = samples
    if out.size < num_samples:
        gap = np.zeros(min(fade * 20, num_samples), dtype=np.float32)
        reps = int(np.ceil(num_samples / (samples.size + gap.size))) + 1
        out = np.concatenate([np.concatenate([samples, gap]) for _ in range(reps)])
    out = out[:num_samples].copy()
    if num_samples < samples.size or out.size > samples.size:
        n = min(fade, out.size)
        out[-n:] *= np.linspace(1.0, 0.0, n, dtype=np.float32)
    return out
