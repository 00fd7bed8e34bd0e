"""Configuration of the synthetic speaking subject."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from talksplat.core.constants import FPS, SAMPLE_RATE
from talksplat.errors import TalksplatError, UsageError


@dataclass(frozen=True)
class SynthConfig:
    """What :func:`talksplat.synthetic.generate` makes. Same config -> same ground truth."""

    seconds: float | None = 20.0   # video length; None = the length of ``audio``
    size: int = 256                # square frame size in pixels (even)
    seed: int = 0
    audio: str | None = None       # driving speech; None = the bundled LibriSpeech clips
    fps: int = FPS
    sample_rate: int = SAMPLE_RATE  # of the written audio
    focal_factor: float = 2.0      # fx = fy = focal_factor * size
    framing: float = 2.9           # frame width in face widths (ear to ear) at rest
    supersample: int = 2           # render at this multiple of size, then area-downsample
    lead_frames: float = 1.5       # the mouth opens this many frames before the sound
    use_phones: bool = True        # refine the mouth with pocketsphinx phone classes
    head_motion: float = 1.0       # scale of the head's random motion (0 = still)
    blink_interval: tuple[float, float] = (2.0, 6.0)   # seconds between blinks
    grain: float = 1.2             # sensor-noise std in 8-bit levels (0 = none)
    crf: int = 18                  # x264 quality
    masks: bool = True             # store per-frame label maps and masks in ground_truth.npz

    @classmethod
    def tiny(cls, seed: int = 0, **overrides: object) -> SynthConfig:
        """Small and quick (128 px, 3.2 s = 80 frames): for unit tests."""
        base = {"seconds": 3.2, "size": 128, "seed": seed}
        base.update(overrides)
        return cls(**base)  # type: ignore[arg-type]

    def replace(self, **changes: object) -> SynthConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def validate(self) -> None:
        """Raise TalksplatError for values the generator cannot honour."""
        if self.size < 64 or self.size % 2:
            raise UsageError(f"--size must be an even number >= 64 (got {self.size})")
        if self.size > 2048:
            raise UsageError(f"--size {self.size} is too large (max 2048)")
        if self.seconds is not None and not (0.2 <= self.seconds <= 3600):
            raise UsageError(f"--seconds must be between 0.2 and 3600 (got {self.seconds})")
        if self.seconds is None and self.audio is None:
            raise UsageError("give --seconds, or --audio to take the length from the audio")
        if self.fps <= 0 or self.sample_rate % self.fps:
            raise TalksplatError(f"the sample rate {self.sample_rate} must be a multiple of fps {self.fps}")
        if self.supersample not in (1, 2, 3, 4):
            raise TalksplatError("supersample must be 1..4")
        if self.focal_factor <= 0 or self.framing <= 0:
            raise TalksplatError("focal_factor and framing must be positive")

    def to_json(self) -> dict[str, object]:
        """JSON-able fields (the audio path reduced to its file name: no absolute paths)."""
        d = dataclasses.asdict(self)
        if self.audio is not None:
            from pathlib import Path

            d["audio"] = Path(self.audio).name
        d["blink_interval"] = list(self.blink_interval)
        return d
