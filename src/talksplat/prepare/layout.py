"""The dataset layout written by ``talksplat prepare`` (documented in docs/dataset.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FORMAT = "talksplat.subject"
FORMAT_VERSION = 1

SUBJECT_JSON = "subject.json"
MEDIA_VIDEO = "media/full.mp4"           # the video at the dataset fps, full source resolution
MEDIA_AUDIO = "media/audio.wav"          # 16 kHz mono, aligned with frame 0, n_frames * sr / fps samples
MEDIA_JSON = "media/media.json"
LANDMARKS_SOURCE = "tracking/landmarks_source.npy"   # (T, 478, 3) float32, source pixels (gaps filled)
DETECTED = "tracking/detected.npy"                   # (T,) bool: False where filled in
TRACK_JSON = "tracking/track.json"
CROP_JSON = "crop.json"
FRAMES = "frames.npy"                    # (T, S, S, 3) uint8 RGB crops
LANDMARKS = "landmarks.npy"              # (T, 478, 3) float32 crop pixels (z scaled alike)
CAMERAS_JSON = "cameras.json"
CAMERAS_NPZ = "cameras.npz"
MASKS = "masks.npy"                      # (T, S, S) uint8 labels
BACKGROUND = "background.png"            # (S, S) RGB plate
EXPRESSIONS = "expressions.npz"
AUDIO_DIR = "audio"
AUDIO_WAV = "audio/audio.wav"            # offset-corrected audio (the features are computed from it)
AUDIO_JSON = "audio/audio.json"
SPLIT_JSON = "split.json"
TRANSFORMS_TRAIN = "transforms_train.json"
TRANSFORMS_VAL = "transforms_val.json"
REPORT_DIR = "report"
CONTACT_SHEET = "report/contact_sheet.png"
CURVES = "report/curves.png"
SUMMARY = "report/summary.json"


def load_subject(subject_dir: str | Path, mmap: bool = True) -> dict[str, object]:
    """Open a prepared subject: subject.json plus the main arrays (memory-mapped by default).

    Returns a dict with keys ``meta`` (subject.json), ``frames``, ``masks``, ``landmarks``,
    ``K`` (3, 3), ``w2c`` (T, 4, 4), ``expressions`` (dict of arrays), ``background`` (S, S, 3).
    """
    import cv2

    root = Path(subject_dir)
    meta = json.loads((root / SUBJECT_JSON).read_text())
    if meta.get("format") != FORMAT or int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{root}: not a {FORMAT} v<={FORMAT_VERSION} dataset")
    mode = "r" if mmap else None
    cams = np.load(root / CAMERAS_NPZ)
    with np.load(root / EXPRESSIONS) as ex:
        expressions = {k: ex[k] for k in ex.files}
    bg = cv2.cvtColor(cv2.imread(str(root / BACKGROUND), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return {"meta": meta, "frames": np.load(root / FRAMES, mmap_mode=mode),
            "masks": np.load(root / MASKS, mmap_mode=mode), "landmarks": np.load(root / LANDMARKS),
            "K": cams["K"], "w2c": cams["w2c"], "expressions": expressions, "background": bg}
