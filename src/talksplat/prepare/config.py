"""Configuration of ``talksplat prepare`` (saved into subject.json next to the outputs)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from talksplat.core.constants import FPS, SAMPLE_RATE
from talksplat.errors import UsageError


@dataclass(frozen=True)
class PrepareConfig:
    """What :func:`talksplat.prepare.prepare` makes from a video. Same config -> same dataset."""

    size: int = 512                    # side of the square crop images, pixels
    fps: int = FPS                     # frames per second of the dataset (the video is resampled)
    audio: bool = True                 # False (--no-audio): accept videos without sound, no audio features
    offset_correction: bool = True     # shift the audio when a reliable A/V offset is found
    # Lips naturally lead the sound by 1-2 frames (facts.md); an offset in [0, this] is that lead, not
    # a muxing error, and is left alone so the avatar learns a natural lead.
    natural_lead_frames: int = 2
    min_seconds: float = 5.0           # shorter videos are refused (too little to train on)
    max_missing_fraction: float = 0.05  # fail when the face is missing in more frames than this
    max_faces: int = 2                 # faces FaceMesh looks for (the subject is chosen among them)
    crop_face_scale: float = 2.4       # crop side in face sizes (+ the head's motion range)
    val_fraction: float = 0.1          # the last this fraction of frames is held out
    full_video_crf: int = 12           # x264 quality of media/full.mp4 (12: visually lossless)
    stabilise: bool = True             # refine landmark poses with optical-flow bundle adjustment

    def replace(self, **changes: object) -> PrepareConfig:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def validate(self) -> None:
        """Raise TalksplatError for settings the pipeline cannot honour."""
        if not 64 <= self.size <= 2048 or self.size % 2:
            raise UsageError(f"--size must be an even number between 64 and 2048 (got {self.size})")
        if self.fps <= 0 or SAMPLE_RATE % self.fps:
            raise UsageError(f"--fps must divide {SAMPLE_RATE} (e.g. 25); got {self.fps}")
        if not 0.0 <= self.val_fraction < 0.5:
            raise UsageError("val_fraction must be in [0, 0.5)")
        if not 0.0 <= self.max_missing_fraction < 1.0:
            raise UsageError("max_missing_fraction must be in [0, 1)")
        if self.max_faces < 1:
            raise UsageError("max_faces must be >= 1")

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, object]) -> PrepareConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})  # type: ignore[arg-type]
