"""A live session's audio timeline: speech waits in a queue and is laid onto the timeline at the pace
frames are rendered; where no speech waits, silence is laid (the avatar idles).

Positions are 16 kHz samples since the session's clock started; video frame ``t`` plays samples
``[640 t, 640 t + 640)`` (``core.constants``). The renderer asks for the audio up to a position
(``take_until``); the audio track reads what was laid (``read``), long after it was laid (the
stream's look-ahead), so audio and video of one frame always come from the same samples.
Nothing here knows about asyncio or WebRTC (tests drive it directly).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from talksplat.core.constants import SAMPLE_RATE, SAMPLES_PER_FRAME
from talksplat.errors import TalksplatError


@dataclass
class Utterance:
    """One piece of speech: when it reached the server (clock seconds) and, once laid, where it starts."""

    arrived: float
    samples: int
    start: int | None = None      # timeline position of its first sample (None while queued)
    markers: tuple[int, ...] = ()  # offsets of sync-probe bursts in it
    first_frame_sent: float | None = None   # clock seconds when the frame playing its first sample left


class AudioTimeline:
    """Queue of pending speech + the laid audio still needed (a bounded ring)."""

    def __init__(self, max_queued_seconds: float, keep_samples: int) -> None:
        self.max_queued = int(max_queued_seconds * SAMPLE_RATE)
        self.keep = int(keep_samples)             # laid samples kept behind the read position
        # (samples, the utterance whose first sample this is or None, whether it is speech)
        self._pending: deque[tuple[np.ndarray, Utterance | None, bool]] = deque()
        self._align: Utterance | None = None       # an utterance to start on a frame boundary
        self._pending_samples = 0
        self._laid = np.zeros(0, np.float32)
        self._laid_start = 0                      # position of self._laid[0]
        self.end = 0                              # position after the last laid sample
        self.speech_until = 0                     # position after the last laid speech sample
        self.utterances: deque[Utterance] = deque(maxlen=256)
        self.probe_onsets: deque[int] = deque(maxlen=256)

    # ------------------------------------------------------------------------------------ input
    @property
    def queued_samples(self) -> int:
        return self._pending_samples

    def enqueue(self, samples: np.ndarray, arrived: float, lead_silence: int = 0, align: bool = False,
                markers: tuple[int, ...] = ()) -> Utterance:
        """Queues speech (16 kHz mono float32). ``lead_silence``: samples of silence before it when
        nothing is queued (a jitter cushion for streamed audio); ``align``: start it on a frame boundary
        (the sync probe, whose burst offsets are ``markers``). TalksplatError when the queue would exceed its limit."""
        samples = np.asarray(samples, np.float32).reshape(-1)
        if self._pending_samples + samples.size > self.max_queued:
            raise TalksplatError(f"{self._pending_samples / SAMPLE_RATE:.0f} s of audio already waits in this "
                                 f"session (limit {self.max_queued / SAMPLE_RATE:.0f} s); interrupt or wait")
        utterance = Utterance(arrived, int(samples.size), markers=tuple(markers))
        fresh = self._pending_samples == 0
        if fresh and lead_silence > 0:
            self._pending.append((np.zeros(int(lead_silence), np.float32), None, False))
            self._pending_samples += int(lead_silence)
        self._pending.append((samples, utterance, True))
        self._pending_samples += samples.size
        if align:
            self._align = utterance
        self.utterances.append(utterance)
        return utterance

    def interrupt(self) -> int:
        """Drops every queued sample (what is already laid still plays: at most the stream's look-ahead)."""
        dropped = self._pending_samples
        self._pending.clear()
        self._pending_samples = 0
        self._align = None
        return dropped

    # ------------------------------------------------------------------------------------ laying
    def take_until(self, position: int) -> np.ndarray:
        """Lays audio up to ``position`` (queued speech first, then silence) and returns the new samples."""
        parts = []
        while self.end < position:
            need = position - self.end
            if not self._pending:
                parts.append(self._lay(np.zeros(need, np.float32), None, False))
                continue
            samples, utterance, speech = self._pending[0]
            if utterance is not None and utterance is self._align:
                gap = (-self.end) % SAMPLES_PER_FRAME
                if gap:                     # the probe starts on a frame boundary
                    parts.append(self._lay(np.zeros(min(gap, need), np.float32), None, False))
                    continue
                self._align = None
            piece, rest = samples[:need], samples[need:]
            if rest.size:
                self._pending[0] = (rest, None, speech)
            else:
                self._pending.popleft()
            self._pending_samples -= piece.size
            parts.append(self._lay(piece, utterance, speech))
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def _lay(self, piece: np.ndarray, utterance: Utterance | None, speech: bool) -> np.ndarray:
        if utterance is not None:
            utterance.start = self.end
            self.probe_onsets.extend(self.end + m for m in utterance.markers)
        if speech and piece.size:
            self.speech_until = self.end + piece.size
        self._laid = np.concatenate([self._laid, piece]) if self._laid.size else piece.copy()
        self.end += piece.size
        return piece

    # ------------------------------------------------------------------------------------ output
    def read(self, start: int, stop: int) -> np.ndarray:
        """Laid samples ``[start, stop)``; zeros where not laid (yet) or already forgotten."""
        out = np.zeros(stop - start, np.float32)
        lo, hi = max(start, self._laid_start), min(stop, self.end)
        if hi > lo:
            out[lo - start:hi - start] = self._laid[lo - self._laid_start:hi - self._laid_start]
        return out

    def forget_before(self, position: int) -> None:
        """Drops laid samples before ``position - keep`` (bounded memory)."""
        cut = position - self.keep
        if cut > self._laid_start:
            drop = min(cut - self._laid_start, self._laid.size)
            self._laid = self._laid[drop:]
            self._laid_start += drop

    def speaking(self, position: int) -> bool:
        """Speech queued, or laid and not yet played at ``position``."""
        return self._pending_samples > 0 or position < self.speech_until

    def probe_onset_in(self, frame: int) -> bool:
        start = frame * SAMPLES_PER_FRAME
        return any(start <= p < start + SAMPLES_PER_FRAME for p in self.probe_onsets)
