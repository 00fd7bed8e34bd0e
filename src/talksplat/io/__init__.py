"""Media input/output: decode video/audio with PyAV, write H.264+AAC MP4s atomically."""

from talksplat.io.atomic import atomic_path, write_bytes_atomic
from talksplat.io.audio import DEFAULT_SAMPLE_RATE, fit_length, load_audio, save_wav
from talksplat.io.video import VideoInfo, VideoWriter, iter_frames, probe_video, read_video, write_video

__all__ = [
    "DEFAULT_SAMPLE_RATE",
    "VideoInfo",
    "VideoWriter",
    "atomic_path",
    "fit_length",
    "iter_frames",
    "load_audio",
    "probe_video",
    "read_video",
    "save_wav",
    "write_bytes_atomic",
    "write_video",
]
