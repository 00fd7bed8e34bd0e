"""Recording a session to MP4 as it is sent: H.264 + AAC, both written as frames arrive (bounded
memory), on a thread of its own so encoding never delays the media tracks."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from talksplat.core.constants import FPS, SAMPLE_RATE

X264_PRESET = "veryfast"   # ~2x faster than medium at about the same size (docs/render.md)
X264_CRF = "20"
AAC_BITRATE = 64_000
AAC_FRAME = 1024           # samples per AAC frame


class Recorder:
    """``add(image, audio_of_that_frame)`` for each frame sent; ``await close()`` finishes the file."""

    def __init__(self, path: Path, width: int, height: int, max_frames: int) -> None:
        self.path = Path(path)
        self.max_frames = int(max_frames)
        self.frames = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="talksplat-record")
        self._container = av.open(str(self.path), mode="w", format="mp4", options={"movflags": "+faststart"})
        video = self._container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"crf": X264_CRF, "preset": X264_PRESET}
        video.codec_context.time_base = Fraction(1, FPS)
        audio = self._container.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        audio.bit_rate = AAC_BITRATE
        self._video, self._audio = video, audio
        self._pending_audio = np.zeros(0, np.float32)
        self._audio_pts = 0

    def add(self, image: np.ndarray, audio: np.ndarray) -> bool:
        """Queues one frame and its audio; False once the length limit is reached (the frame is dropped)."""
        if self.frames >= self.max_frames:
            return False
        index = self.frames
        self.frames += 1
        self._pool.submit(self._write, image, np.asarray(audio, np.float32), index)
        return True

    def _write(self, image: np.ndarray, audio: np.ndarray, index: int) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts, frame.time_base = index, Fraction(1, FPS)
        for packet in self._video.encode(frame):
            self._container.mux(packet)
        self._pending_audio = np.concatenate([self._pending_audio, audio])
        while self._pending_audio.size >= AAC_FRAME:
            self._encode_audio(self._pending_audio[:AAC_FRAME])
            self._pending_audio = self._pending_audio[AAC_FRAME:]

    def _encode_audio(self, chunk: np.ndarray) -> None:
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = SAMPLE_RATE, self._audio_pts, Fraction(1, SAMPLE_RATE)
        for packet in self._audio.encode(frame):
            self._container.mux(packet)
        self._audio_pts += chunk.size

    def _finish(self) -> None:
        for packet in self._video.encode(None):
            self._container.mux(packet)
        if self._pending_audio.size:
            self._encode_audio(self._pending_audio)
        for packet in self._audio.encode(None):
            self._container.mux(packet)
        self._container.close()

    async def close(self) -> int:
        """Finishes the file; returns the number of frames in it."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._finish)
        self._pool.shutdown(wait=False)
        return self.frames
