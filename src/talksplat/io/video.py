"""Video reading (PyAV) and H.264/AAC MP4 writing with atomic replacement of the output file."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Self

import av
import numpy as np

from talksplat.core.constants import FPS, SAMPLE_RATE
from talksplat.errors import TalksplatError, UsageError
from talksplat.io.atomic import atomic_path
from talksplat.io.paths import require_file

_AAC_FRAME = 1024


@dataclass(frozen=True)
class VideoInfo:
    """What a video file contains, as its container reports it (no full decode)."""

    path: str
    width: int
    height: int
    fps: float
    num_frames: int            # from the stream header; 0 if the container does not say
    duration: float            # seconds, video stream (or container when the stream has none)
    has_audio: bool
    audio_sample_rate: int     # 0 without audio
    audio_duration: float      # seconds, 0.0 without audio


def _open(path: str | os.PathLike[str]) -> av.container.InputContainer:
    path = require_file(path, "video")
    try:
        return av.open(str(path))
    except av.FFmpegError as exc:
        raise UsageError(f"cannot open {path} as a video: {exc}") from exc


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Read the stream headers of ``path`` and return a :class:`VideoInfo`."""
    with _open(path) as container:
        if not container.streams.video:
            raise UsageError(f"{path} has no video stream")
        vs = container.streams.video[0]
        fps = float(vs.average_rate or vs.guessed_rate or 0)
        if vs.duration is not None and vs.time_base is not None:
            duration = float(vs.duration * vs.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        num_frames = int(vs.frames or 0)
        has_audio = bool(container.streams.audio)
        sr, adur = 0, 0.0
        if has_audio:
            aus = container.streams.audio[0]
            sr = int(aus.rate or 0)
            if aus.duration is not None and aus.time_base is not None:
                adur = float(aus.duration * aus.time_base)
        return VideoInfo(str(path), int(vs.width), int(vs.height), fps, num_frames, duration,
                         has_audio, sr, adur)


def iter_frames(path: str | os.PathLike[str]) -> Iterator[tuple[float, np.ndarray]]:
    """Decode the first video stream of ``path``.

    Yields:
        (time_seconds, frame) with frame (H, W, 3) uint8 RGB, in presentation order.
    """
    with _open(path) as container:
        if not container.streams.video:
            raise UsageError(f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            t = float(frame.time) if frame.time is not None else 0.0
            yield t, frame.to_ndarray(format="rgb24")


def read_video(path: str | os.PathLike[str], max_frames: int | None = None) -> np.ndarray:
    """Decode all (or the first ``max_frames``) frames of ``path``.

    Returns:
        frames: (T, H, W, 3) uint8 RGB
    """
    frames: list[np.ndarray] = []
    for _, frame in iter_frames(path):
        frames.append(frame)
        if max_frames is not None and len(frames) >= max_frames:
            break
    if not frames:
        raise UsageError(f"{path} contains no decodable video frames")
    return np.stack(frames)


class VideoWriter:
    """Write an H.264 (yuv420p) MP4 at a constant frame rate, with optional mono AAC audio.

    Audio is given up front and interleaved with the video as frames arrive, so the file
    streams well. The output appears at ``path`` only when :meth:`close` succeeds (temp file +
    ``os.replace``); on an exception inside a ``with`` block nothing is left behind.
    ``metadata`` sets container tags (e.g. ``{"comment": ...}``).

    Example:
        with VideoWriter("out.mp4", 256, 256, fps=25, audio=samples, sample_rate=16000) as w:
            for frame in frames:          # (256, 256, 3) uint8 RGB
                w.write(frame)
    """

    def __init__(self, path: str | os.PathLike[str], width: int, height: int, fps: int = FPS,
                 audio: np.ndarray | None = None, sample_rate: int = SAMPLE_RATE, crf: int = 18,
                 preset: str = "medium", audio_bitrate: int = 64_000, threads: int = 0,
                 metadata: dict[str, str] | None = None) -> None:
        if width % 2 or height % 2:
            raise TalksplatError(f"H.264 yuv420p needs even frame sizes, got {width}x{height}")
        self.path = Path(path)
        self.width, self.height, self.fps = int(width), int(height), int(fps)
        self._ctx = atomic_path(self.path)
        tmp = self._ctx.__enter__()
        try:
            self._container = av.open(str(tmp), mode="w", format="mp4",
                                      options={"movflags": "+faststart"})
            for key, value in (metadata or {}).items():
                self._container.metadata[key] = value
            vs = self._container.add_stream("libx264", rate=self.fps)
            vs.width, vs.height, vs.pix_fmt = self.width, self.height, "yuv420p"
            vs.options = {"crf": str(crf), "preset": preset}
            vs.codec_context.time_base = Fraction(1, self.fps)
            if threads:
                vs.codec_context.thread_count = threads
            self._vstream = vs
            self._astream = None
            self._audio = None
            if audio is not None:
                self._audio = np.asarray(audio, dtype=np.float32).reshape(-1)
                aus = self._container.add_stream("aac", rate=int(sample_rate), layout="mono")
                aus.bit_rate = int(audio_bitrate)
                self._astream = aus
            self.sample_rate = int(sample_rate)
        except BaseException:
            self._ctx.__exit__(*_exc_info())
            raise
        self._num_frames = 0
        self._audio_pos = 0
        self._closed = False

    @property
    def num_frames(self) -> int:
        """Frames written so far."""
        return self._num_frames

    def write(self, frame: np.ndarray) -> None:
        """Append one frame: (H, W, 3) uint8 RGB with the writer's size."""
        frame = np.ascontiguousarray(frame)
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"expected ({self.height}, {self.width}, 3) uint8, got {frame.shape} "
                             f"{frame.dtype}")
        vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
        vf.pts = self._num_frames
        vf.time_base = Fraction(1, self.fps)
        for packet in self._vstream.encode(vf):
            self._container.mux(packet)
        self._num_frames += 1
        self._push_audio(self._num_frames * self.sample_rate // self.fps)

    def _push_audio(self, until: int) -> None:
        if self._audio is None or self._astream is None:
            return
        until = min(until, self._audio.size)
        while until - self._audio_pos >= _AAC_FRAME:
            self._encode_audio(self._audio[self._audio_pos:self._audio_pos + _AAC_FRAME])

    def _encode_audio(self, chunk: np.ndarray) -> None:
        af = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="flt", layout="mono")
        af.sample_rate = self.sample_rate
        af.pts = self._audio_pos
        af.time_base = Fraction(1, self.sample_rate)
        for packet in self._astream.encode(af):
            self._container.mux(packet)
        self._audio_pos += chunk.size

    def close(self) -> Path:
        """Flush the encoders, finish the file and move it into place; returns the path."""
        if self._closed:
            return self.path
        self._closed = True
        try:
            for packet in self._vstream.encode(None):
                self._container.mux(packet)
            if self._audio is not None and self._astream is not None:
                self._push_audio(self._audio.size)
                if self._audio_pos < self._audio.size:  # AAC allows a short last frame
                    self._encode_audio(self._audio[self._audio_pos:])
                for packet in self._astream.encode(None):
                    self._container.mux(packet)
            self._container.close()
        except BaseException:
            self._abort()
            raise
        self._ctx.__exit__(None, None, None)
        return self.path

    def _abort(self) -> None:
        with contextlib.suppress(Exception):  # the file is being discarded anyway
            self._container.close()
        with contextlib.suppress(RuntimeError):
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        elif not self._closed:
            self._closed = True
            self._abort()


def _exc_info() -> tuple[type[BaseException], BaseException, None]:
    return RuntimeError, RuntimeError("aborted"), None


def write_video(path: str | os.PathLike[str], frames: Iterable[np.ndarray], fps: int = FPS,
                audio: np.ndarray | None = None, sample_rate: int = SAMPLE_RATE, crf: int = 18,
                preset: str = "medium") -> Path:
    """Write ``frames`` (each (H, W, 3) uint8 RGB, or a (T, H, W, 3) array) as an MP4.

    ``audio`` is (N,) float32 mono at ``sample_rate``, muxed as AAC. Returns the path.
    """
    it = iter(frames)
    try:
        first = np.asarray(next(it))
    except StopIteration:
        raise TalksplatError("no frames to write") from None
    h, w = first.shape[:2]
    with VideoWriter(path, w, h, fps=fps, audio=audio, sample_rate=sample_rate, crf=crf,
                     preset=preset) as writer:
        writer.write(first)
        for frame in it:
            writer.write(np.asarray(frame))
    return Path(path)
