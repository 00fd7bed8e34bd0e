"""Streaming rendering: feed audio in chunks of any size, get each frame as soon as the audio it depends
on has arrived, identical to rendering the whole clip at once.

What a frame depends on (``features.audio`` timing, 16 kHz, frame ``t`` = samples ``[640 t, 640 t + 640)``):

- its log-mel window, steps ``4t - 6 .. 4t + 9``; step ``j`` is a 25 ms Hann window over samples
  ``[160 j - 120, 160 j + 280)``, so the window needs samples ``[640 t - 1080, 640 t + 1720)``:
  1720 samples (107.5 ms) past the frame's start;
- the audio encoder's temporal attention over the windows of frames ``t - 4 .. t + 3``
  (``smoothing_frames = 8``, ``fields.motion.temporal_window``): 3 frames more.

So frame ``t`` is final once ``640 t + 3 * 640 + 1720 = 640 t + 3640`` samples have arrived: the
algorithmic latency is 3640 samples = 227.5 ms = 5.69 frames after the frame's start, whatever the chunk
size. (Computed from the feature and the model's encoder, not hard-coded.) At :meth:`RenderStream.flush`
the clip's length is known: the audio is fitted to whole frames (:func:`output_frame_count`) as the
offline render does, and the remaining frames are rendered with the edge rules of the whole clip.

Only features that depend on a bounded stretch of audio with fixed normalisation can stream: ``mel``
(the recipe's audio encoder normalises with statistics fitted at training time and stored with the
weights). ``phones`` and ``mel+phones`` (pocketsphinx decodes whole utterances), ``avsync`` (its mel
input is standardised per clip) and ``wav2vec2``/``hubert`` (normalised over, and attending to, whole
20 s chunks) raise a :class:`TalksplatError` from :meth:`Renderer.stream`; ``render_frames`` still
renders them from the whole clip.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch

from talksplat.errors import TalksplatError
from talksplat.features.audio import (
    MEL_BANDS,
    MEL_HOP,
    MEL_WINDOW,
    SAMPLES_PER_FRAME,
    STEPS_PER_FRAME,
    WINDOW_LEAD,
    WINDOW_STEPS,
    log_mel_steps,
    num_frames_for_samples,
)
from talksplat.features.registry import AudioFeatures


class FrameSource(Protocol):
    """What a stream renders through (``render.renderer.Renderer``)."""

    def audio_window_extent(self) -> tuple[int, int]: ...

    def render_frame(self, i: int, windows: torch.Tensor, window_index: int, options: Any,
                     seam_meter: Any = None) -> np.ndarray: ...

    def stage(self, name: str) -> Any: ...

# Why each non-streamable feature kind cannot stream (see the module docstring).
NOT_STREAMABLE = {
    "phones": "pocketsphinx decodes whole utterances, so a frame's phones change as later audio arrives",
    "mel+phones": "its phone half comes from pocketsphinx decoding whole utterances",
    "avsync": "its mel input is standardised with the whole clip's mean and variance",
    "wav2vec2": "the transformer normalises over and attends to whole 20 s chunks",
    "hubert": "the transformer normalises over and attends to whole 20 s chunks",
}


def output_frame_count(num_samples: int) -> int:
    """Video frames rendered for ``num_samples`` samples of 16 kHz audio: the project's single rule,
    :func:`features.audio.num_frames_for_samples` (ceil(N / 640), a trailing partial frame of 5 ms or less
    dropped). ``render_video`` fits the muxed audio to exactly these frames (<= 5 ms trimmed or < 40 ms
    of silence appended), so the output has exactly round(25 x duration) frames and equal A/V lengths."""
    return num_frames_for_samples(int(num_samples))


class FrameJob(NamedTuple):
    """What rendering output frame ``index`` needs: ``windows[window_index]`` is its audio window,
    with the neighbours its conditions look at around it."""

    index: int
    windows: torch.Tensor
    window_index: int


class StreamingFeature:
    """A per-frame audio feature computable from a bounded stretch of audio around the frame.

    ``history``/``reach``: samples before / past the frame's start (exclusive) its window needs;
    ``align``: buffers may only be trimmed at multiples of this many samples.
    """

    name = ""
    frame_shape: tuple[int, ...] = ()
    history = 0
    reach = 0
    align = 1

    def window(self, samples: np.ndarray, offset: int, frame: int) -> np.ndarray:
        """The feature of ``frame`` from ``samples`` whose first sample is sample ``offset`` of the clip
        (samples outside the buffer count as silence)."""
        raise NotImplementedError


class StreamingMel(StreamingFeature):
    """``mel``: each frame's (16, 80) log-mel window, exactly as :func:`features.audio.mel_windows`."""

    name = "mel"
    frame_shape = (WINDOW_STEPS, MEL_BANDS)
    align = MEL_HOP
    # Step j's window spans [160 j + 80 - 200, 160 j + 80 + 200); frame 0's window is steps -6 .. 9.
    history = WINDOW_LEAD * MEL_HOP - MEL_HOP // 2 + MEL_WINDOW // 2                           # 1080
    reach = (WINDOW_STEPS - WINDOW_LEAD - 1) * MEL_HOP + MEL_HOP // 2 + MEL_WINDOW // 2        # 1720

    def window(self, samples: np.ndarray, offset: int, frame: int) -> np.ndarray:
        first = frame * STEPS_PER_FRAME - WINDOW_LEAD - offset // MEL_HOP
        return log_mel_steps(samples, first, WINDOW_STEPS)


STREAMING_FEATURES = {"mel": StreamingMel}


def streaming_feature(name: str) -> StreamingFeature:
    """The streaming version of audio feature ``name``; TalksplatError when it cannot stream."""
    kind = AudioFeatures(name).spec.kind        # parses (and rejects unknown names) like training does
    if kind in STREAMING_FEATURES:
        return STREAMING_FEATURES[kind]()
    reason = NOT_STREAMABLE.get(kind, "talksplat has no streaming version of it")
    raise TalksplatError(f"audio feature {name!r} cannot be streamed: {reason}; streamable: "
                         f"{', '.join(STREAMING_FEATURES)} (render whole clips with `talksplat render` instead)")


class RenderStream:
    """Incremental rendering: ``push(chunk) -> frames``, then ``flush() -> the remaining frames``.

        stream = renderer.stream(RenderOptions())
        for chunk in chunks:                  # 16 kHz mono float32, any sizes
            for frame in stream.push(chunk):  # (H, W, 3) uint8, in order
                send(frame)
        for frame in stream.flush():
            send(frame)

    Frame ``t`` is returned by the first push after which ``640 t + latency_samples`` samples have
    arrived (``latency_samples`` = 3640 for ``mel`` with the recipe's 8-frame attention window), and is
    bit-identical to frame ``t`` of ``Renderer.render_frames(whole_audio)``. Memory stays bounded: the
    stream keeps only the audio and feature windows that later frames still need.
    """

    def __init__(self, renderer: FrameSource, options: Any, feature: StreamingFeature,
                 seam_meter: Any = None) -> None:
        self.renderer = renderer
        self.options = options
        self.feature = feature
        self.behind, self.ahead = renderer.audio_window_extent()
        self.latency_samples = self.ahead * SAMPLES_PER_FRAME + feature.reach
        self._seam = seam_meter
        self._samples = np.zeros(0, np.float32)
        self._offset = 0                 # clip index of self._samples[0]
        self._received = 0
        self._windows: dict[int, torch.Tensor] = {}
        self._next_window = 0
        self._next_frame = 0
        self._total: int | None = None   # known after flush()

    @property
    def latency_frames(self) -> float:
        """Audio that must arrive after a frame's start before the frame can be rendered, in frames."""
        return self.latency_samples / SAMPLES_PER_FRAME

    @property
    def frames_emitted(self) -> int:
        return self._next_frame

    @property
    def samples_received(self) -> int:
        return self._received

    @property
    def total_frames(self) -> int | None:
        """The clip's frame count once flushed, else None."""
        return self._total

    def push(self, samples: np.ndarray) -> list[np.ndarray]:
        """Adds a chunk of audio; returns the frames it completed (possibly none)."""
        return list(self.iter_push(samples))

    def flush(self) -> list[np.ndarray]:
        """Ends the audio; returns every remaining frame. The stream cannot be pushed to afterwards."""
        return list(self.iter_flush())

    def iter_push(self, samples: np.ndarray) -> Iterator[np.ndarray]:
        """As :meth:`push`, rendering each frame only when the iterator is advanced (consume it fully
        before the next call)."""
        return self._rendered(self.iter_push_jobs(samples))

    def iter_flush(self) -> Iterator[np.ndarray]:
        """As :meth:`flush`, rendering lazily."""
        return self._rendered(self.iter_flush_jobs())

    def iter_push_jobs(self, samples: np.ndarray) -> Iterator[FrameJob]:
        """As :meth:`iter_push`, but yields each completed frame's :class:`FrameJob` instead of rendering
        it (for a caller that renders several frames at once, e.g. ``Renderer.render_frames``)."""
        if self._total is not None:
            raise TalksplatError("this stream was flushed; start a new one with Renderer.stream()")
        chunk = np.asarray(samples, dtype=np.float32)
        if chunk.ndim != 1:
            chunk = chunk.squeeze()
            if chunk.ndim != 1:
                raise TalksplatError(f"audio chunks must be mono 16 kHz samples, shape (N,); got {np.shape(samples)}")
        if not np.all(np.isfinite(chunk)):
            raise TalksplatError("audio chunk contains NaN/inf samples; send finite 16 kHz float32 audio")
        if chunk.size:
            self._samples = np.concatenate([self._samples, chunk]) if self._samples.size else chunk.copy()
            self._received += chunk.size
        return self._emit()

    def iter_flush_jobs(self) -> Iterator[FrameJob]:
        """As :meth:`iter_flush`, yielding :class:`FrameJob` s (see :meth:`iter_push_jobs`)."""
        if self._total is None:
            self._total = output_frame_count(self._received)
            # As offline: the audio is fitted (trimmed or zero-padded) to whole frames.
            keep = max(self._total * SAMPLES_PER_FRAME - self._offset, 0)
            self._samples = self._samples[:keep]
        return self._emit()

    # ------------------------------------------------------------------------------------------
    def _window_ready(self, t: int) -> bool:
        if self._total is not None:
            return t < self._total
        return self._received >= t * SAMPLES_PER_FRAME + self.feature.reach

    def _frame_ready(self, i: int) -> bool:
        if self._total is not None:
            return i < self._total
        return self._next_window > i + self.ahead

    def _rendered(self, jobs: Iterator[FrameJob]) -> Iterator[np.ndarray]:
        for job in jobs:
            yield self.renderer.render_frame(job.index, job.windows, job.window_index, self.options, self._seam)

    def _emit(self) -> Iterator[FrameJob]:
        r = self.renderer
        while True:
            needed = self._next_frame + self.ahead
            while self._next_window <= needed and self._window_ready(self._next_window):
                with r.stage("audio_features"):
                    window = self.feature.window(self._samples, self._offset, self._next_window)
                self._windows[self._next_window] = torch.from_numpy(np.ascontiguousarray(window, np.float32))
                self._next_window += 1
            i = self._next_frame
            if not self._frame_ready(i):
                return
            base = max(0, i - self.behind)
            stop = i + self.ahead + 1 if self._total is None else min(self._total, i + self.ahead + 1)
            windows = torch.stack([self._windows[k] for k in range(base, stop)])
            self._next_frame += 1
            self._forget()
            yield FrameJob(i, windows, i - base)

    def _forget(self) -> None:
        """Drops windows and samples no later frame needs."""
        for k in [k for k in self._windows if k < self._next_frame - self.behind]:
            del self._windows[k]
        align = max(self.feature.align, 1)
        keep_from = max(0, (self._next_window * SAMPLES_PER_FRAME - self.feature.history) // align * align)
        if self._offset < keep_from <= self._offset + self._samples.size:
            self._samples = self._samples[keep_from - self._offset:]
            self._offset = keep_from
