"""WebRTC (aiortc): one peer connection per session with an audio and a video track in one media
stream, each sending its frame at the session clock's due time (so the RTCP sender reports map both
tracks' timestamps onto one wall clock, and the tracks share one media stream, so the browser plays
them in sync), and the browser's
microphone, when it sends one, queued as streamed speech.

On a loopback host nothing leaves the machine: the server offers only 127.0.0.1 candidates, keeps only
the browser's loopback candidates, and uses no STUN server.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import ipaddress
import logging
import time

import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame, AudioResampler, VideoFrame

from talksplat.core.constants import SAMPLE_RATE, SAMPLES_PER_FRAME
from talksplat.errors import TalksplatError
from talksplat.serve.session import Session

log = logging.getLogger("talksplat.serve")

VIDEO_CLOCK = 90_000                          # RTP video clock (Hz)
VIDEO_TICKS_PER_FRAME = VIDEO_CLOCK * SAMPLES_PER_FRAME // SAMPLE_RATE
AUDIO_CHUNK_S = 0.020                         # what WebRTC sends per audio packet (Opus: 20 ms)
AUDIO_CHUNK = int(AUDIO_CHUNK_S * SAMPLE_RATE)
PCM_MAX = 32767
# A track that falls further behind the clock than this jumps ahead (drops) instead of bursting.
# Audio jumps only after a long stall: the Opus encoder numbers its output by samples, so a skip shifts
# the audio's timestamps against the video's until the next sender report.
MAX_LAG_FRAMES = 2
MAX_LAG_AUDIO_CHUNKS = 50
LOOPBACK = "127.0.0.1"


class AvatarVideoTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
        self._slot = 0

    async def recv(self) -> VideoFrame:
        session = self.session
        if session.closed:
            raise MediaStreamError
        session.ensure_started()
        behind = session.current_slot() - self._slot
        if behind > MAX_LAG_FRAMES:
            session.stats["slots_late_skipped"] += behind
            self._slot += behind
        slot = self._slot
        self._slot += 1
        await _sleep_until(session.due(slot))
        frame = VideoFrame.from_ndarray(session.frame_for_slot(slot), format="rgb24")
        frame.pts = slot * VIDEO_TICKS_PER_FRAME
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        return frame


class AvatarAudioTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
        self._chunk = 0

    async def recv(self) -> AudioFrame:
        session = self.session
        if session.closed:
            raise MediaStreamError
        session.ensure_started()
        behind = int((time.monotonic() - session.due(0)) / AUDIO_CHUNK_S) - self._chunk
        if behind > MAX_LAG_AUDIO_CHUNKS:
            session.stats["audio_chunks_skipped"] += behind
            self._chunk += behind
        chunk = self._chunk
        self._chunk += 1
        await _sleep_until(session.due(0) + chunk * AUDIO_CHUNK_S)
        samples = session.audio_for(chunk * AUDIO_CHUNK, (chunk + 1) * AUDIO_CHUNK)
        pcm = np.clip(np.round(samples * PCM_MAX), -PCM_MAX, PCM_MAX).astype(np.int16)
        frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = chunk * AUDIO_CHUNK
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        return frame


async def _sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def restrict_ice_to_loopback() -> None:
    """aioice gathers host candidates on every interface except loopback; on a loopback server we want
    the opposite (nothing but this machine is ever contacted)."""
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=False: [LOOPBACK]


def loopback_candidates_only(sdp: str) -> str:
    """The offer without ICE candidates that are not on loopback (and without mDNS names)."""
    kept = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            fields = line.split()
            address = fields[4] if len(fields) > 4 else ""
            if not is_loopback(address):
                continue
        kept.append(line)
    return "\r\n".join(kept) + "\r\n"


async def answer(session: Session, sdp: str, kind: str, loopback: bool) -> RTCSessionDescription:
    """Connects ``session`` to the browser's offer; returns the answer (all candidates gathered)."""
    if kind != "offer":
        raise TalksplatError(f"expected an SDP offer (type 'offer'), got type {kind!r}")
    if session.peer is not None:
        raise TalksplatError("this session already has a media connection; create a new session")
    if loopback:
        sdp = loopback_candidates_only(sdp)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    session.peer = pc

    @pc.on("connectionstatechange")
    async def _state() -> None:
        log.info("session %s: connection %s", session.id, pc.connectionState)
        if pc.connectionState in ("failed", "closed"):
            await session.close()

    @pc.on("track")
    def _track(track) -> None:
        if track.kind == "audio":
            asyncio.get_running_loop().create_task(_ingest_microphone(session, track))

    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
    except Exception as exc:  # noqa: BLE001 - aiortc raises ValueError, KeyError, ... for malformed SDP
        raise TalksplatError(f"the SDP offer was not understood: {str(exc)[:200]}") from None
    video, audio = AvatarVideoTrack(session), AvatarAudioTrack(session)
    pc.addTrack(audio)     # reuses the browser's transceivers; aiortc puts every track in one stream
    pc.addTrack(video)
    await pc.setLocalDescription(await pc.createAnswer())
    return pc.localDescription


async def _ingest_microphone(session: Session, track) -> None:
    """Queues the browser's microphone as streamed speech (16 kHz mono) until the track ends."""
    resampler = AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
        while not session.closed:
            frame = await track.recv()
            for out in resampler.resample(frame):
                samples = out.to_ndarray().reshape(-1).astype(np.float32)
                try:
                    session.enqueue(samples, time.monotonic(), live=True)
                except TalksplatError:
                    return
