"""A prepared subject as training tensors (shared by every recipe).

Reads the layout written by ``talksplat prepare`` (docs/dataset.md) and resizes to the training
resolution. Frames stay uint8 and memory-mapped; one frame is converted to float when sampled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from talksplat.errors import TalksplatError

# Label numbers of the prepared masks (talksplat.tracking.masks.LABELS).
BACKGROUND, TORSO, NECK, HAIR, SKIN, EYE_RIGHT, EYE_LEFT, LIPS, INSIDE_MOUTH = range(9)
HEAD_LABELS = (HAIR, SKIN, EYE_RIGHT, EYE_LEFT, LIPS, INSIDE_MOUTH)
# What the head model does not draw: it is taken from the source frame (as ER-NeRF/TalkingGaussian
# composite the head over the torso); the neck is drawn by the head model where it overlaps.
BACKDROP_FROM_FRAME = (TORSO, NECK)


@dataclass
class SubjectData:
    frames: np.ndarray        # (T, S, S, 3) uint8, memory-mapped
    masks: np.ndarray         # (T, S, S) uint8 labels
    background: Tensor        # (H, W, 3) float plate at the training size
    K: Tensor                 # (3, 3) intrinsics at the training size, pixel centres at +0.5
    w2c: Tensor               # (T, 4, 4)
    expressions: Tensor       # (T, 7) SyncTalk++ core coefficients in [0, 1]
    blink: np.ndarray         # (T,)
    lip_open: np.ndarray      # (T,) mm
    lips_part: np.ndarray     # (T,)
    audio: Tensor | None      # (T, 16, D) windows, or None when the subject has no audio features
    lip_shapes: np.ndarray    # (T, 80) Procrustes-normalised lip landmark shapes (sync_offset)
    train_frames: np.ndarray  # indices
    val_frames: np.ndarray
    size: int                 # training resolution
    source_size: int

    @property
    def n_frames(self) -> int:
        return self.frames.shape[0]

    def image(self, t: int) -> Tensor:
        """(size, size, 3) float in [0, 1]."""
        return torch.from_numpy(self._resized(self.frames[t], interpolation="area")).float() / 255.0

    def labels(self, t: int) -> Tensor:
        return torch.from_numpy(self._resized(self.masks[t], interpolation="nearest"))

    def backdrop(self, t: int) -> Tensor:
        """What shows behind the head in frame t: the source torso and neck, else the plate."""
        keep = torch.isin(self.labels(t), torch.tensor(BACKDROP_FROM_FRAME))
        return torch.where(keep[..., None], self.image(t), self.background)

    def _resized(self, array: np.ndarray, interpolation: str) -> np.ndarray:
        if self.size == self.source_size:
            return np.array(array)  # a writable copy of the memory-mapped frame
        import cv2

        flag = cv2.INTER_AREA if interpolation == "area" else cv2.INTER_NEAREST
        return cv2.resize(np.ascontiguousarray(array), (self.size, self.size), interpolation=flag)


def load_subject_data(subject_dir: Path, size: int, audio_feature: str = "mel") -> SubjectData:
    from talksplat.prepare.layout import SPLIT_JSON, load_subject

    subject_dir = Path(subject_dir)
    if not (subject_dir / "subject.json").exists():
        raise TalksplatError(f"{subject_dir} is not a prepared subject (no subject.json); "
                             f"run `talksplat prepare VIDEO -o {subject_dir}` first")
    raw = load_subject(subject_dir)
    meta = raw["meta"]
    source = int(raw["frames"].shape[1])
    scale = size / source
    K = torch.tensor(raw["K"], dtype=torch.float32).clone()
    K[:2] *= scale
    # prepare stores OpenCV intrinsics (pixel centres at integer coordinates); the rasterizer puts
    # pixel centres at +0.5.
    K[0, 2] += 0.5
    K[1, 2] += 0.5
    import cv2

    background = cv2.resize(raw["background"], (size, size), interpolation=cv2.INTER_AREA)
    ex = raw["expressions"]
    split = meta.get("split") or json.loads((subject_dir / SPLIT_JSON).read_text())
    train = np.arange(split["train"]["start"], split["train"]["stop"])
    val = np.arange(split["val"]["start"], split["val"]["stop"])
    return SubjectData(
        frames=raw["frames"], masks=raw["masks"],
        background=torch.from_numpy(background).float() / 255.0, K=K,
        w2c=torch.tensor(raw["w2c"], dtype=torch.float32),
        expressions=torch.tensor(ex["core"], dtype=torch.float32),
        blink=np.asarray(ex["blink"]), lip_open=np.asarray(ex["lip_open_mm"]), lips_part=np.asarray(ex["lips_part"]),
        audio=_load_audio_features(subject_dir, audio_feature, len(raw["frames"])),
        lip_shapes=_lip_shapes(raw["landmarks"]),
        train_frames=train, val_frames=val, size=size, source_size=source,
    )


def _lip_shapes(landmarks: np.ndarray) -> np.ndarray:
    from talksplat.features.sync_model import lip_points
    from talksplat.features.sync_offset import normalise_lip_shapes

    return normalise_lip_shapes(lip_points(landmarks))[0].astype(np.float32)


def _load_audio_features(subject_dir: Path, name: str, n_frames: int) -> Tensor | None:
    path = subject_dir / "audio" / f"{name}.npy"
    if not path.exists():
        return None
    feats = np.load(path)
    if feats.shape[0] != n_frames:
        raise TalksplatError(f"{path} has {feats.shape[0]} frames but the subject has {n_frames}; "
                             "re-run `talksplat prepare` to recompute the audio features")
    if feats.ndim == 2:  # (T, D) per-frame features -> a one-step window
        feats = feats[:, None, :]
    return torch.from_numpy(np.ascontiguousarray(feats)).float()
