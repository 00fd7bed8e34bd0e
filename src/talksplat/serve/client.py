"""A minimal WebRTC viewer in Python (aiortc): connects to a session like the page does and counts
what arrives. Used by the tests and by benchmarks/serve_load.py; not needed to run the server."""

from __future__ import annotations

import asyncio
import contextlib
import time

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError


class ToneTrack:
    """Makes an aiortc audio track playing a steady tone in real time (a stand-in microphone)."""

    @staticmethod
    def make(hz: float = 440.0, amplitude: float = 0.3):
        import fractions

        from aiortc import MediaStreamTrack
        from av import AudioFrame

        rate, chunk = 48_000, 960

        class _Tone(MediaStreamTrack):
            kind = "audio"

            def __init__(self) -> None:
                super().__init__()
                self._n = 0
                self._start: float | None = None

            async def recv(self):
                if self._start is None:
                    self._start = time.monotonic()
                delay = self._start + self._n * chunk / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                t = (self._n * chunk + np.arange(chunk)) / rate
                pcm = (amplitude * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)
                frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
                frame.sample_rate, frame.pts = rate, self._n * chunk
                frame.time_base = fractions.Fraction(1, rate)
                self._n += 1
                return frame

        return _Tone()


class Viewer:
    """``await viewer.connect(http, base_url, session_id)``; frames and audio then accumulate in
    ``video_frames`` (count), ``last_images`` (the newest few, RGB) and ``audio_peak``."""

    KEEP_IMAGES = 8

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.video_frames = 0
        self.video_times: list[float] = []
        self.audio_frames = 0
        self.audio_peak = 0.0
        self.last_images: list[np.ndarray] = []
        self._tasks: list[asyncio.Task] = []

    async def connect(self, http, base_url: str, session_id: str, microphone=None) -> None:
        """``http``: an aiohttp ClientSession. Negotiates, then starts reading both tracks.
        ``microphone``: an aiortc audio track to send as the viewer's microphone."""
        self.pc.addTransceiver("video", direction="recvonly")
        if microphone is None:
            self.pc.addTransceiver("audio", direction="recvonly")
        else:
            self.pc.addTransceiver(microphone, direction="sendrecv")

        @self.pc.on("track")
        def _track(track) -> None:
            reader = self._read_video if track.kind == "video" else self._read_audio
            self._tasks.append(asyncio.get_running_loop().create_task(reader(track)))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = {"sdp": self.pc.localDescription.sdp, "type": self.pc.localDescription.type}
        async with http.post(f"{base_url}/api/sessions/{session_id}/offer", json=offer) as response:
            body = await response.json()
            if response.status != 200:
                raise RuntimeError(f"offer refused: {response.status} {body}")
        await self.pc.setRemoteDescription(RTCSessionDescription(**body))

    async def _read_video(self, track) -> None:
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await track.recv()
                self.video_frames += 1
                self.video_times.append(time.monotonic())
                self.last_images = (self.last_images + [frame.to_ndarray(format="rgb24")])[-self.KEEP_IMAGES:]

    async def _read_audio(self, track) -> None:
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await track.recv()
                self.audio_frames += 1
                samples = frame.to_ndarray()
                scale = 32768.0 if samples.dtype == np.int16 else 1.0
                self.audio_peak = max(self.audio_peak, float(np.abs(samples).max()) / scale)

    async def wait_for_frames(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.video_frames < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.video_frames >= count

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()
