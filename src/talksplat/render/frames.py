"""Full-resolution source frames by index, with bounded memory (for the paste-back).

``media/full.mp4`` can be minutes of 1080p: decoding it whole would take gigabytes. ``SourceFrames``
keeps an open decoder and an LRU cache of at most ``max_bytes`` of decoded frames (256 MB by default,
e.g. ~40 frames at 1920x1080, ~330 at 512x512, the whole video for small sources). The render asks for
frames in ping-pong order, which the cache serves cheaply:

- forwards: the decoder just continues (each frame is decoded once);
- backwards: on a miss at frame ``i`` it seeks to the keyframe at or before ``i - capacity + 1`` and
  decodes forwards to ``i``, caching that block, so the next ``capacity - 1`` backward requests are
  hits. Each backward block costs the frames from the keyframe to ``i`` (``full.mp4`` has a keyframe
  every 250 frames at most), i.e. roughly ``(125 + capacity) / capacity`` decodes per frame;
- a still pose is one cached frame.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

from talksplat.errors import TalksplatError

DEFAULT_CACHE_BYTES = 256 << 20


class SourceFrames:
    """``frames[i]`` -> (H, W, 3) uint8 RGB frame ``i`` of a constant-frame-rate video (read-only;
    copy before modifying). Indices past the end give the last frame."""

    def __init__(self, path: Path, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        from talksplat.io.video import probe_video

        self.path = Path(path)
        info = probe_video(self.path)
        self.width, self.height, self.fps = info.width, info.height, info.fps or 25.0
        self.frame_bytes = self.width * self.height * 3
        self.capacity = max(2, int(max_bytes) // max(self.frame_bytes, 1))
        self.num_frames = info.num_frames or None   # refined when the decoder reaches the end
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._container = None
        self._stream = None
        self._frames = None      # the running decode iterator
        self._next = 0           # index of the frame the iterator yields next
        self._block_start = 0    # frames before this are decoded but not cached (after a seek)
        self.decoded = 0         # frames decoded so far (for the benchmark and the docs)
        self.seeks = 0

    # ------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.num_frames or 0

    def __getitem__(self, index: int) -> np.ndarray:
        index = max(int(index), 0)
        if self.num_frames is not None:
            index = min(index, self.num_frames - 1)
        frame = self._cache.get(index)
        if frame is not None:
            self._cache.move_to_end(index)
            return frame
        if self._frames is not None and self._next <= index < self._next + self.capacity:
            return self._decode_until(index)
        # Backwards (or a far jump): decode the block that ends at ``index`` from the keyframe before it.
        start = index - self.capacity + 1 if self._frames is not None and index < self._next else index
        self._seek(max(start, 0))
        return self._decode_until(index)

    @property
    def cached_bytes(self) -> int:
        return len(self._cache) * self.frame_bytes

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = self._stream = self._frames = None
        self._cache.clear()

    # ------------------------------------------------------------------------------------------
    def _open(self):
        import av

        if self._container is None:
            try:
                self._container = av.open(str(self.path))
            except av.FFmpegError as exc:
                raise TalksplatError(f"cannot open {self.path} ({exc}); re-run `talksplat prepare`") from exc
            self._stream = self._container.streams.video[0]
            self._stream.thread_type = "AUTO"
        return self._container, self._stream

    def _seek(self, start: int) -> None:
        container, stream = self._open()
        base = stream.start_time or 0
        if start > 0:
            container.seek(base + int(start / self.fps / stream.time_base), stream=stream, backward=True)
            self.seeks += 1
        else:
            container.seek(base, stream=stream, backward=True)
        self._frames = self._iterate(container, stream)
        self._next = -1   # unknown until the first frame after the keyframe arrives
        self._block_start = start

    def _iterate(self, container, stream):
        base = stream.start_time or 0
        for frame in container.decode(stream):
            pts = frame.pts if frame.pts is not None else 0
            yield round(float((pts - base) * stream.time_base) * self.fps), frame

    def _decode_until(self, index: int) -> np.ndarray:
        if self._frames is None:
            self._seek(0)
        last = None
        for i, frame in self._frames:
            self._next = i + 1
            self.decoded += 1
            if i < self._block_start and i < index:
                continue                     # between the keyframe and the block: decode only
            array = frame.to_ndarray(format="rgb24")
            array.flags.writeable = False
            self._remember(i, array)
            last = array
            if i >= index:
                self._block_start = 0
                return array
        # End of the video: the last frame stands in for any index past it.
        self.num_frames = self._next if self._next > 0 else self.num_frames
        self._frames = None
        self._block_start = 0
        if last is not None:
            return last
        if self.num_frames:
            return self[self.num_frames - 1]
        raise TalksplatError(f"{self.path} contains no decodable video frames; re-run `talksplat prepare`")

    def _remember(self, index: int, frame: np.ndarray) -> None:
        self._cache[index] = frame
        self._cache.move_to_end(index)
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
