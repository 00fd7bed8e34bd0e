"""One live avatar session: an audio timeline, a render loop that keeps frames a little ahead of the
session clock, and what the media tracks read at each frame's due time.

Clock: frame ``k`` is due ``t0 + k / 25`` s after the clock starts (when the first media track asks for
data). The render loop wakes a render lead before frame ``n`` is due (``render_lead_s``, longer when
frames have been taking longer), lays the audio frame ``n`` needs onto the timeline (queued speech,
else silence: ``latency_samples`` past the frame's start) and renders it on the shared render thread. The video track sends frame ``k`` at its due time (the previous
frame again if ``k`` is not ready: a dropped frame); the audio track sends the timeline's samples of
the same instant. Both therefore carry the same frame's audio and picture at the same wall-clock
time, and the RTCP sender reports tell the browser so (A/V sync).

An overloaded server (more sessions than the cores render) skips frames that could no longer be sent
within one slot of their time instead of falling behind, so every session keeps real time and sync,
at a lower frame rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from talksplat.core.constants import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from talksplat.engine.avatar import Avatar
from talksplat.errors import TalksplatError
from talksplat.render.renderer import Renderer, RenderOptions
from talksplat.render.stream import RenderStream
from talksplat.serve import probe
from talksplat.serve.limits import RENDER_LEAD_MARGIN_S, ServeLimits
from talksplat.serve.timeline import AudioTimeline

log = logging.getLogger("talksplat.serve")

FRAME_S = 1.0 / FPS
# The clock starts this long after the first media request: the first frame (with the renderer's
# warm-up) must be ready when it is due.
START_BUFFER_S = 0.25
FRAMES_KEPT = 4              # rendered frames kept for the video track (it needs the newest one or two)
RENDER_TIME_SMOOTHING = 0.2  # weight of the newest render time in its running average
# Frames predicted to be late are skipped at most this many in a row: the next one is rendered anyway,
# which also keeps the render-time estimate current (a stale, high estimate would skip every frame).
MAX_CONSECUTIVE_SKIPS = 2
LATENCY_RECORDS = 200        # first-frame latencies kept per session for /stats


class FrameGate:
    """The render stream's frame source: renders through the session's ``Renderer`` unless the frame
    could no longer be sent on time (then returns no image, and the stream goes on to the next)."""

    def __init__(self, renderer: Renderer, session: Session) -> None:
        self.renderer = renderer
        self.session = session
        self.skip_all = False        # set while the session catches up with its clock

    def audio_window_extent(self) -> tuple[int, int]:
        return self.renderer.audio_window_extent()

    def stage(self, name: str):
        return self.renderer.stage(name)

    def render_frame(self, i, windows, window_index, options, seam_meter=None):
        if self.skip_all or self.session.too_late(i):
            return i, None
        start = time.monotonic()
        image = self.renderer.render_frame(i, windows, window_index, options, seam_meter)
        self.session.note_render_time(time.monotonic() - start)
        return i, image


class Session:
    """State of one viewer: its avatar stream, audio timeline, frames, statistics and recording."""

    def __init__(self, session_id: str, avatar_name: str, avatar: Avatar, limits: ServeLimits,
                 render_pool: Executor, work_dir: Path, probe_stamps: bool = False) -> None:
        self.id = session_id
        self.avatar_name = avatar_name
        self.limits = limits
        self.render_pool = render_pool
        self.work_dir = work_dir
        self.probe_stamps = probe_stamps
        self.renderer = Renderer(avatar)
        checked = self.renderer.stream(RenderOptions(pose="loop", expression="video"))
        self._gate = FrameGate(self.renderer, self)
        self.stream = RenderStream(self._gate, checked.options, checked.feature)
        self.latency_samples = self.stream.latency_samples
        keep = self.latency_samples + 4 * SAMPLES_PER_FRAME
        self.timeline = AudioTimeline(limits.max_queued_seconds, keep)
        self.size = self.renderer.size
        self.created = time.monotonic()
        self.t0: float | None = None
        self.closed = False
        self.peer = None                       # the RTCPeerConnection, set by media.py
        self.recorder = None                   # serve.record.Recorder while recording
        self.recording_path: Path | None = None
        self._frames: dict[int, np.ndarray] = {}
        self._blank = np.zeros((self.size, self.size, 3), np.uint8)
        self._last_sent: np.ndarray | None = None
        self._render_ema = 0.0
        self._turnaround_ema = 0.0
        self._sent: int = -1                   # index of the newest frame sent
        self._renders = 0
        self._skips_in_a_row = 0
        self._task: asyncio.Task | None = None
        self._unmeasured: deque = deque(maxlen=LATENCY_RECORDS)
        # slots: frame times the video track sent something; repeated: the last picture again (dropped);
        # one_late: the previous frame, ready one slot late; late_skipped: slots the track jumped over.
        self.stats = {"frames_rendered": 0, "frames_skipped": 0, "slots_sent": 0, "slots_repeated": 0,
                      "slots_one_late": 0, "slots_late_skipped": 0, "audio_chunks_skipped": 0,
                      "audio_chunks_sent": 0, "audio_underruns": 0, "render_ms_total": 0.0}
        self.first_frame_latencies_ms: deque[float] = deque(maxlen=LATENCY_RECORDS)

    # ------------------------------------------------------------------------------------ clock
    @property
    def started(self) -> bool:
        return self.t0 is not None

    def ensure_started(self) -> None:
        """Starts the clock and the render loop (the first media request does this)."""
        if self.t0 is not None or self.closed:
            return
        self.t0 = time.monotonic() + START_BUFFER_S
        self._task = asyncio.get_running_loop().create_task(self._render_loop(), name=f"render-{self.id}")

    def due(self, frame: int) -> float:
        """Clock time (time.monotonic) at which ``frame`` is sent."""
        assert self.t0 is not None
        return self.t0 + frame * FRAME_S

    def current_slot(self) -> int:
        return 0 if self.t0 is None else max(int((time.monotonic() - self.t0) / FRAME_S), 0)

    def too_late(self, frame: int) -> bool:
        """Whether to skip ``frame`` (called on the render thread, so queueing is already behind us):
        already too late, or predicted to finish too late (then at most MAX_CONSECUTIVE_SKIPS in a row)."""
        now, due = time.monotonic(), self.due(frame) + self.limits.late_tolerance_s
        late = now > due or (now + self._render_ema > due and self._skips_in_a_row < MAX_CONSECUTIVE_SKIPS)
        self._skips_in_a_row = self._skips_in_a_row + 1 if late else 0
        return late

    def note_render_time(self, seconds: float) -> None:
        self._renders += 1
        self.stats["render_ms_total"] += seconds * 1000
        if self._renders == 1:
            return           # the first frame includes one-off warm-up work: not a prediction
        w = RENDER_TIME_SMOOTHING
        self._render_ema = seconds if self._render_ema == 0 else (1 - w) * self._render_ema + w * seconds

    def render_lead(self) -> float:
        """How long before a frame is due its rendering starts: the configured lead, or the recent
        time from starting a frame to having it (queueing for the render thread included) plus a margin."""
        wanted = self._turnaround_ema + RENDER_LEAD_MARGIN_S
        return min(max(self.limits.render_lead_s, wanted), self.limits.max_render_lead_s)

    def _note_turnaround(self, seconds: float) -> None:
        w = RENDER_TIME_SMOOTHING
        self._turnaround_ema = seconds if self._turnaround_ema == 0 else (1 - w) * self._turnaround_ema + w * seconds

    # ------------------------------------------------------------------------------------ rendering
    async def _render_loop(self) -> None:
        loop = asyncio.get_running_loop()
        n = 0
        try:
            while not self.closed:
                await _sleep_until(self.due(n) - self.render_lead())
                if self.closed:
                    break
                produced = self._catch_up(n)
                n = self.stream.frames_emitted
                new = self.timeline.take_until(n * SAMPLES_PER_FRAME + self.latency_samples)
                started = time.monotonic()
                produced += await loop.run_in_executor(self.render_pool, _drain, self.stream.iter_push(new))
                # every job counts, skipped or not: the wait for the render thread is the same
                self._note_turnaround(time.monotonic() - started)
                for i, image in produced:
                    if image is None:
                        self.stats["frames_skipped"] += 1
                    else:
                        self.stats["frames_rendered"] += 1
                        self._frames[i] = image
                n = self.stream.frames_emitted
                for old in [i for i in self._frames if i < n - FRAMES_KEPT]:
                    del self._frames[old]
                self.timeline.forget_before(self.current_slot() * SAMPLES_PER_FRAME)
        except asyncio.CancelledError:
            raise
        except Exception:   # a render failure ends this session only; the server goes on
            log.exception("session %s: rendering failed; closing it", self.id)
            await self.close()

    def _catch_up(self, n: int) -> list:
        """Skips, here and at once, frames ``n``... that can no longer be ready in time (behind the clock
        after a slow stretch): only their audio features are computed, so the render thread's queue
        holds real renders only and the session is back on its clock after one step."""
        ready_at = time.monotonic() + self._turnaround_ema - self.limits.late_tolerance_s
        first_possible = int(np.ceil((ready_at - self.due(0)) / FRAME_S))
        if first_possible <= n:
            return []
        self._gate.skip_all = True
        try:
            new = self.timeline.take_until((first_possible - 1) * SAMPLES_PER_FRAME + self.latency_samples)
            return list(self.stream.iter_push(new))
        finally:
            self._gate.skip_all = False

    # ------------------------------------------------------------------------------------ media
    def frame_for_slot(self, slot: int) -> np.ndarray:
        """The picture sent at ``slot``: frame ``slot`` if rendered, else the previous frame if it came
        late and was not sent yet (one slot late), else the last picture again (a dropped frame)."""
        self.stats["slots_sent"] += 1
        index = slot if slot in self._frames else slot - 1
        if index in self._frames and index > self._sent:
            image, self._sent = self._frames[index], index
            if index < slot:
                self.stats["slots_one_late"] += 1
        else:
            self.stats["slots_repeated"] += 1
            image = self._last_sent if self._last_sent is not None else self._blank
        self._last_sent = image
        self._measure_latency(slot)
        if self.probe_stamps:
            image = probe.stamp(image, slot, self.timeline.probe_onset_in(slot))
        if self.recorder is not None:
            self._record(slot, image)
        return image

    def audio_for(self, start: int, stop: int) -> np.ndarray:
        """Timeline samples ``[start, stop)`` for the audio track (silence where none were laid)."""
        self.stats["audio_chunks_sent"] += 1
        if stop > self.timeline.end:
            self.stats["audio_underruns"] += 1
        return self.timeline.read(start, stop)

    def _measure_latency(self, slot: int) -> None:
        """First-frame latency of each utterance: from its arrival to the moment the frame that plays
        its first sample is handed to the video track."""
        now = time.monotonic()
        while self._unmeasured and self._unmeasured[0].start is not None \
                and self._unmeasured[0].start // SAMPLES_PER_FRAME <= slot:
            utterance = self._unmeasured.popleft()
            utterance.first_frame_sent = now
            self.first_frame_latencies_ms.append(round((now - utterance.arrived) * 1000, 1))

    # ------------------------------------------------------------------------------------ speech
    def enqueue(self, samples: np.ndarray, arrived: float, live: bool = False, markers: tuple[int, ...] = ()):
        """Queues speech to be spoken after what is queued (``live``: streamed audio, given a jitter cushion)."""
        if self.closed:
            raise TalksplatError("this session is closed")
        lead = int(self.limits.live_jitter_s * SAMPLE_RATE) if live else 0
        fresh = self.timeline.queued_samples == 0
        utterance = self.timeline.enqueue(samples, arrived, lead_silence=lead, align=bool(markers), markers=markers)
        if fresh or not live:     # a stream's later chunks continue its utterance
            self._unmeasured.append(utterance)
        return utterance

    def interrupt(self) -> float:
        """Drops the queued speech; returns its length in seconds."""
        dropped = self.timeline.interrupt()
        self._unmeasured.clear()
        return dropped / SAMPLE_RATE

    def speaking(self) -> bool:
        return self.timeline.speaking(self.current_slot() * SAMPLES_PER_FRAME)

    # ------------------------------------------------------------------------------------ recording
    def start_recording(self) -> None:
        from talksplat.serve.record import Recorder

        if self.recorder is not None:
            raise TalksplatError("this session is already recording; stop it first")
        self.recording_path = self.work_dir / f"recording-{self.id}.mp4"
        max_frames = int(self.limits.max_record_seconds * FPS)
        self.recorder = Recorder(self.recording_path, self.size, self.size, max_frames)

    async def stop_recording(self) -> dict:
        recorder, self.recorder = self.recorder, None
        if recorder is None:
            raise TalksplatError("this session is not recording; start it first")
        frames = await recorder.close()
        return {"frames": frames, "seconds": frames / FPS}

    def _record(self, slot: int, image: np.ndarray) -> None:
        audio = self.timeline.read(slot * SAMPLES_PER_FRAME, (slot + 1) * SAMPLES_PER_FRAME)
        if not self.recorder.add(image, audio):
            log.info("session %s: recording reached its %s s limit", self.id, self.limits.max_record_seconds)
            asyncio.get_running_loop().create_task(self._finish_full_recording())

    async def _finish_full_recording(self) -> None:
        with contextlib.suppress(TalksplatError):
            await self.stop_recording()

    # ------------------------------------------------------------------------------------ status
    def status(self) -> dict:
        elapsed = 0.0 if self.t0 is None else max(time.monotonic() - self.t0, 0.0)
        rendered = self.stats["frames_rendered"]
        fresh = self.stats["slots_sent"] - self.stats["slots_repeated"]
        latencies = sorted(self.first_frame_latencies_ms)
        return {"id": self.id, "avatar": self.avatar_name, "size": self.size, "started": self.started,
                "seconds": round(elapsed, 2), "speaking": self.speaking(),
                "queued_seconds": round(self.timeline.queued_samples / SAMPLE_RATE, 2),
                "recording": self.recorder is not None,
                **self.stats, "render_ms_mean": round(self.stats["render_ms_total"] / rendered, 1) if rendered else None,
                "delivered_fps": round(fresh / elapsed, 2) if elapsed > 1 else None,
                "first_frame_latency_ms": latencies,
                "latency_samples": self.latency_samples}

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.recorder is not None:
            with contextlib.suppress(Exception):
                await self.stop_recording()
        if self.peer is not None:
            peer, self.peer = self.peer, None
            with contextlib.suppress(Exception):
                await peer.close()
        self._frames.clear()
        self.renderer.close()


def _drain(iterator) -> list:
    return list(iterator)


async def _sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def render_pool() -> ThreadPoolExecutor:
    """One render thread for every session: a frame uses both cores (torch's threads), so frames
    rendered one after another finish sooner than frames rendered side by side."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="talksplat-render")
