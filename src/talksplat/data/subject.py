"""A prepared subject as training tensors, with named per-frame channels (shared by every recipe).

Reads the layout written by ``talksplat prepare`` (docs/dataset.md) and resizes to the training
resolution. Frames stay uint8 and memory-mapped; one frame is converted to float when sampled.

Per-frame channels (``SubjectData.channel(name)``, first dimension = frames):

    frames         (T, S, S, 3) uint8      masks        (T, S, S) uint8 labels (core.labels)
    landmarks      (T, 478, 3) crop px     w2c          (T, 4, 4) cameras (world = head frame)
    expressions    (T, 7) core coefficients in [0, 1]     blink, lip_open, lips_part  (T,)
    lip_shapes     (T, 80) Procrustes-normalised lip landmarks
    audio          (T, window, D) the run's audio feature (``audio_feature``), computed on demand
    face_model/*   every array of SUBJECT/face_model.npz whose first dimension is T, when present

A recipe lists the channels it needs (``Recipe.required_channels``); a missing one is a one-line
error naming the prepare step that makes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from talksplat.core.labels import BACKDROP_FROM_FRAME, HEAD_LABELS
from talksplat.core.pixels import raster_intrinsics, rescale_pixels
from talksplat.errors import TalksplatError, UsageError

_BACKDROP_LOOKUP = np.zeros(256, dtype=bool)     # label value (uint8) -> taken from the source frame
_BACKDROP_LOOKUP[list(BACKDROP_FROM_FRAME)] = True

FACE_MODEL_FILE = "face_model.npz"
# Which command makes a channel that a subject may lack.
CHANNEL_SOURCES = {
    "audio": "`talksplat prepare` on a video with sound",
    "face_model": "`talksplat prepare` (its face-model step writes face_model.npz)",
}


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
    audio: Tensor | None      # (T, window, D) features of ``audio_feature``, or None without audio
    lip_shapes: np.ndarray    # (T, 80) Procrustes-normalised lip landmark shapes (sync_offset)
    train_frames: np.ndarray  # indices
    val_frames: np.ndarray
    size: int                 # training resolution
    source_size: int
    audio_feature: str = "mel"
    landmarks: np.ndarray | None = None    # (T, 478, 3) crop pixels
    extra_channels: dict[str, np.ndarray] = field(default_factory=dict)
    subject_dir: Path | None = None
    fingerprint: dict = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def to(self, device: torch.device | str) -> SubjectData:
        """Moves the tensors to ``device`` (in place; returns self). Frames and masks stay
        memory-mapped on the host; ``image``, ``labels`` and ``backdrop`` return tensors on ``device``."""
        self.device = torch.device(device)
        for name in ("background", "K", "w2c", "expressions", "audio"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.to(self.device))
        return self

    @property
    def n_frames(self) -> int:
        return self.frames.shape[0]

    @property
    def name(self) -> str:
        return self.subject_dir.name if self.subject_dir is not None else "subject"

    def channel_names(self) -> list[str]:
        fixed = ["frames", "masks", "w2c", "expressions", "blink", "lip_open", "lips_part", "lip_shapes"]
        fixed += ["landmarks"] if self.landmarks is not None else []
        fixed += ["audio"] if self.audio is not None else []
        return fixed + sorted(self.extra_channels)

    def channel(self, name: str):
        """The per-frame array ``name`` (see the module docstring); TalksplatError if absent."""
        if name in self.extra_channels:
            return self.extra_channels[name]
        value = getattr(self, name, None) if name in self.channel_names() else None
        if value is None:
            source = CHANNEL_SOURCES.get(name.split("/")[0], "`talksplat prepare`")
            raise TalksplatError(f"subject {self.name} has no {name!r} data; run {source} "
                                 f"(it has: {', '.join(self.channel_names())})")
        return value

    def require(self, names: tuple[str, ...]) -> None:
        for name in names:
            self.channel(name)

    def image(self, t: int) -> Tensor:
        """(size, size, 3) float in [0, 1]."""
        return torch.from_numpy(self._resized(self.frames[t], interpolation="area")).to(self.device).float() / 255.0

    def labels(self, t: int) -> Tensor:
        return torch.from_numpy(self._label_array(t)).to(self.device)

    def _label_array(self, t: int) -> np.ndarray:
        """Frame t's labels at the training size, on the host (for numpy work on any device)."""
        return self._resized(self.masks[t], interpolation="nearest")

    def backdrop(self, t: int) -> Tensor:
        """What shows behind the head in frame t: the source torso and neck, else the plate."""
        # A lookup table and a mask expanded to the three channels: torch.isin and a where that
        # broadcasts the mask were 3x slower, and this runs for every rendered and trained frame.
        keep = torch.from_numpy(_BACKDROP_LOOKUP[self._label_array(t)]).to(self.device)
        return torch.where(keep[..., None].expand(-1, -1, 3).contiguous(), self.image(t), self.background)

    def head_box(self, t: int) -> tuple[slice, slice] | None:
        """The bounding box of the head labels in frame t (rows, cols), or None when there are none."""
        ys, xs = np.nonzero(np.isin(self._label_array(t), HEAD_LABELS))
        if len(ys) == 0:
            return None
        return slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1)

    def landmarks_px(self, t: int) -> np.ndarray | None:
        """(478, 2) landmarks of frame t in pixels of the training size (pixel centres at integers, as
        prepare's), or None when the subject has no landmarks."""
        if self.landmarks is None:
            return None
        return rescale_pixels(np.asarray(self.landmarks[t])[:, :2], self.size / self.source_size)

    def _resized(self, array: np.ndarray, interpolation: str) -> np.ndarray:
        if self.size == self.source_size:
            return np.array(array)  # a writable copy of the memory-mapped frame
        import cv2

        flag = cv2.INTER_AREA if interpolation == "area" else cv2.INTER_NEAREST
        return cv2.resize(np.ascontiguousarray(array), (self.size, self.size), interpolation=flag)


def subject_fingerprint(subject_dir: Path) -> dict:
    """What identifies a prepared subject's data: the source video's sha256, the dataset format and
    the frame count (and, for finding it again, its path). Runs record it; a subject re-prepared from
    another video no longer matches."""
    meta = _subject_meta(Path(subject_dir))
    source = meta.get("source") if isinstance(meta.get("source"), dict) else {}
    return {"source_sha256": source.get("sha256"), "format_version": meta.get("format_version"),
            "n_frames": meta.get("n_frames"), "path": str(Path(subject_dir).resolve())}


def _subject_meta(subject_dir: Path) -> dict:
    from talksplat.prepare.layout import SUBJECT_JSON

    path = subject_dir / SUBJECT_JSON
    if not path.is_file():
        raise UsageError(f"{subject_dir} is not a prepared subject (no {SUBJECT_JSON}); "
                         f"run `talksplat prepare VIDEO -o {subject_dir}` first")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TalksplatError(f"{path} is unreadable ({exc}); re-run `talksplat prepare`") from exc
    if not isinstance(meta, dict):
        raise TalksplatError(f"{path} is not a subject description; re-run `talksplat prepare`")
    return meta


def load_subject_data(subject_dir: Path, size: int, audio_feature: str = "mel",
                      require_audio: bool = False) -> SubjectData:
    """Loads a prepared subject at training resolution ``size``. The audio feature is read from
    ``audio/<feature>.npy`` when prepare wrote it, else computed from ``audio/audio.wav`` and cached."""
    import cv2

    from talksplat.prepare.layout import SPLIT_JSON, load_subject

    subject_dir = Path(subject_dir)
    fingerprint = subject_fingerprint(subject_dir)
    raw = load_subject(subject_dir)
    meta = raw["meta"]
    source = int(raw["frames"].shape[1])
    # prepare stores OpenCV intrinsics (pixel centres at integer coordinates); the rasterizer puts
    # them at +0.5 (core.pixels says why the resize is not a plain multiplication).
    K = torch.tensor(raster_intrinsics(raw["K"], size / source), dtype=torch.float32)
    background = cv2.resize(raw["background"], (size, size), interpolation=cv2.INTER_AREA)
    ex = raw["expressions"]
    split = meta.get("split") or json.loads((subject_dir / SPLIT_JSON).read_text())
    n_frames = len(raw["frames"])
    audio = load_audio_feature(subject_dir, audio_feature, n_frames)
    if audio is None and require_audio:
        raise TalksplatError("the subject has no audio features (prepared with --no-audio?); "
                             "re-run `talksplat prepare` on a video with sound")
    return SubjectData(
        frames=raw["frames"], masks=raw["masks"],
        background=torch.from_numpy(background).float() / 255.0, K=K,
        w2c=torch.tensor(raw["w2c"], dtype=torch.float32),
        expressions=torch.tensor(ex["core"], dtype=torch.float32),
        blink=np.asarray(ex["blink"]), lip_open=np.asarray(ex["lip_open_mm"]), lips_part=np.asarray(ex["lips_part"]),
        audio=audio, lip_shapes=_lip_shapes(raw["landmarks"]),
        train_frames=np.arange(split["train"]["start"], split["train"]["stop"]),
        val_frames=np.arange(split["val"]["start"], split["val"]["stop"]),
        size=size, source_size=source, audio_feature=audio_feature, landmarks=raw["landmarks"],
        extra_channels=_face_model_channels(subject_dir, n_frames), subject_dir=subject_dir,
        fingerprint=fingerprint,
    )


def _lip_shapes(landmarks: np.ndarray) -> np.ndarray:
    from talksplat.features.sync_model import lip_points
    from talksplat.features.sync_offset import normalise_lip_shapes

    return normalise_lip_shapes(lip_points(landmarks))[0].astype(np.float32)


def _face_model_channels(subject_dir: Path, n_frames: int) -> dict[str, np.ndarray]:
    path = subject_dir / FACE_MODEL_FILE
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as npz:
        return {f"face_model/{k}": npz[k] for k in npz.files if npz[k].ndim and npz[k].shape[0] == n_frames}


def load_audio_feature(subject_dir: Path, name: str, n_frames: int) -> Tensor | None:
    """(T, window, D) features ``name`` of the subject's audio; None when the subject has no audio.

    ``audio/<name>.npy`` (written by prepare for the default features) is used when present; any
    other feature (``avsync:DIR``, ``wav2vec2:DIR``, ...) is computed from ``audio/audio.wav`` once and
    cached under ``audio/cache/`` (keyed by the audio's and the model's content)."""
    from talksplat.features.registry import AudioFeatures

    audio_dir = Path(subject_dir) / "audio"
    features = AudioFeatures(name)          # validates the name first: one-line error if unknown
    prepared = audio_dir / f"{features.name}.npy"
    if features.spec.path is None and prepared.is_file():
        feats = np.load(prepared)
    elif (audio_dir / "audio.wav").is_file():
        feats = AudioFeatures(name, cache_dir=audio_dir / "cache").compute(audio_dir / "audio.wav", n_frames)
    else:
        return None
    if feats.shape[0] != n_frames:
        raise TalksplatError(f"{prepared} has {feats.shape[0]} frames but the subject has {n_frames}; "
                             "re-run `talksplat prepare` to recompute the audio features")
    if feats.ndim == 2:  # (T, D) per-frame features -> a one-step window
        feats = feats[:, None, :]
    return torch.from_numpy(np.ascontiguousarray(feats)).float()
