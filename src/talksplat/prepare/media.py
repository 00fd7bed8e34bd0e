"""Step 1 (media): check the input, resample the video to the dataset fps, extract 16 kHz mono audio.

Any container/codec FFmpeg (PyAV) decodes is accepted. Frame ``i`` of the dataset is the source
frame nearest in time to ``i / fps`` (counted from the first frame); the full-resolution result
is kept as a visually lossless H.264 file (``media/full.mp4``) to paste results back into.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

from talksplat.core.constants import SAMPLE_RATE
from talksplat.errors import TalksplatError, UsageError
from talksplat.io import VideoWriter, load_audio, probe_video
from talksplat.io.paths import require_file
from talksplat.io.video import iter_frames
from talksplat.prepare.config import PrepareConfig

# A file whose frames stop this much before its header's duration is truncated.
TRUNCATION_TOLERANCE_S = 0.5
TRUNCATION_TOLERANCE_FRACTION = 0.05
FULL_VIDEO_PRESET = "veryfast"


def check_input(video: Path, cfg: PrepareConfig):
    """Probe ``video`` and refuse what the pipeline cannot use, with a one-line reason and fix."""
    require_file(video, "video")
    try:
        info = probe_video(video)
    except TalksplatError as exc:
        if "no video stream" in str(exc):
            raise UsageError(f"{video} has no video stream: give a video file (mp4/mov/mkv/webm/avi)") from None
        raise UsageError(f"{video} is not a readable video (FFmpeg cannot open it); "
                         "give an mp4/mov/mkv/webm/avi file") from None
    if info.width <= 0 or info.height <= 0:
        raise UsageError(f"{video} has no decodable video stream: give a video file")
    if cfg.audio and not info.has_audio:
        raise UsageError(f"{video} has no audio stream: pass --no-audio to prepare it without sound")
    if 0 < info.duration < cfg.min_seconds:
        raise UsageError(f"{video} is {info.duration:.1f} s long; at least {cfg.min_seconds:g} s is needed "
                         "(record or pick a longer clip)")
    return info


def _even(n: int) -> int:
    return n + (n % 2)


def resample_and_store(video: Path, out_path: Path, fps: int, crf: int,
                       progress: Callable[[int], None] | None = None) -> dict:
    """Decode ``video``, pick the nearest source frame for each output time, write ``out_path``.

    Returns:
        dict with n_frames, frame_map (list: source frame index per output frame), source_frames,
        source_duration (decoded, s), width, height (source), padded (bool: odd sizes padded by 1).
    """
    writer: VideoWriter | None = None
    frame_map: list[int] = []
    t0 = None
    prev: tuple[int, float, np.ndarray] | None = None
    count = 0
    width = height = 0
    last_time = 0.0
    pad = (0, 0)

    def emit(frame: np.ndarray, index: int) -> None:
        nonlocal writer
        if writer is None:
            writer = VideoWriter(out_path, _even(width), _even(height), fps=fps, crf=crf,
                                 preset=FULL_VIDEO_PRESET)
        if pad != (0, 0):
            frame = np.pad(frame, ((0, pad[0]), (0, pad[1]), (0, 0)), mode="edge")
        writer.write(frame)
        frame_map.append(index)
        if progress is not None:
            progress(1)

    try:
        for k, (t, frame) in enumerate(iter_frames(video)):
            if t0 is None:
                t0 = t
                height, width = frame.shape[:2]
                pad = (_even(height) - height, _even(width) - width)
            rel = t - t0
            if prev is not None:
                boundary = 0.5 * (prev[1] + rel)     # outputs before it are nearer to prev
                while len(frame_map) / fps < boundary:
                    emit(prev[2], prev[0])
            prev = (k, rel, frame)
            count += 1
            last_time = rel
    except av.FFmpegError as exc:
        if writer is not None:
            writer._abort()
        raise UsageError(f"{video} is truncated or corrupt ({type(exc).__name__} while decoding frame "
                         f"{count}); re-export or re-download it") from None
    except BaseException:
        if writer is not None:
            writer._abort()
        raise
    if prev is None:
        raise UsageError(f"{video} contains no decodable video frames: give a video file")
    # The last frame lasts one source frame period (mean spacing of the decoded frames).
    period = last_time / (count - 1) if count > 1 else 1.0 / fps
    duration = last_time + period
    while len(frame_map) < int(np.floor(duration * fps + 1e-6)):
        emit(prev[2], prev[0])
    assert writer is not None
    writer.close()
    return {"n_frames": len(frame_map), "frame_map": frame_map, "source_frames": count,
            "source_duration": duration, "width": width, "height": height, "padded": pad != (0, 0)}


def stream_start_offset(video: Path) -> float:
    """Seconds by which the video stream starts after the audio stream (0 if unknown)."""
    with av.open(str(video)) as container:
        vs, aus = container.streams.video[0], container.streams.audio[0]
        if vs.start_time is None or aus.start_time is None:
            return 0.0
        return float(vs.start_time * vs.time_base) - float(aus.start_time * aus.time_base)


def extract_audio(video: Path, n_frames: int, fps: int) -> tuple[np.ndarray, float]:
    """16 kHz mono audio aligned with the first video frame, exactly ``n_frames * sr / fps`` samples.

    Returns (samples, shift_s): the start-time difference that was compensated.
    """
    samples = load_audio(video, sample_rate=SAMPLE_RATE)
    shift = stream_start_offset(video)
    skip = round(shift * SAMPLE_RATE)
    if skip > 0:
        samples = samples[skip:]
    elif skip < 0:
        samples = np.concatenate([np.zeros(-skip, np.float32), samples])
    want = n_frames * SAMPLE_RATE // fps
    if samples.size >= want:
        return samples[:want].astype(np.float32), shift
    # Pad with silence rather than looping (fit_length loops): missing audio stays missing.
    return np.concatenate([samples, np.zeros(want - samples.size, np.float32)]), shift


def check_truncation(video: Path, header_duration: float, decoded_duration: float) -> None:
    """Refuse files whose frames stop well before the duration their header declares."""
    if header_duration <= 0:
        return
    tolerance = max(TRUNCATION_TOLERANCE_S, TRUNCATION_TOLERANCE_FRACTION * header_duration)
    if decoded_duration < header_duration - tolerance:
        raise UsageError(f"{video} looks truncated: its header says {header_duration:.1f} s but frames stop "
                         f"at {decoded_duration:.1f} s; re-export or re-download it")


__all__ = ["check_input", "check_truncation", "extract_audio", "resample_and_store"]
