"""Audio-visual sync: offset estimation of a clip and the trainable sync encoder (one import point).

- :func:`estimate_offset` - a clip's audio-video offset from its lip landmarks and audio, with no
  trained weights (per-lag lip-shape regression, :mod:`talksplat.features.sync_offset`);
- :func:`train_sync_encoder` - the SyncTalk++ Face-Sync Controller encoders trained on one or several
  subjects (:mod:`talksplat.features.sync_model`), whose audio branch is the ``avsync`` feature and
  whose similarities give talksplat's own lip-sync score (:func:`lip_sync_score`).
"""

from talksplat.features.sync_model import (
    LipSyncScore,
    SyncClip,
    SyncEncoder,
    SyncEncoderConfig,
    SyncFeatureExtractor,
    SyncTrainConfig,
    SyncTrainResult,
    clip_from_files,
    clip_from_prepared,
    clip_from_video,
    lip_sync_score,
    load_sync_encoder,
    make_clip,
    save_sync_encoder,
    train_sync_encoder,
)
from talksplat.features.sync_offset import OffsetEstimate, estimate_offset, shift_audio, shift_frame_features

__all__ = [
    "LipSyncScore", "OffsetEstimate", "SyncClip", "SyncEncoder", "SyncEncoderConfig", "SyncFeatureExtractor",
    "SyncTrainConfig", "SyncTrainResult", "clip_from_files", "clip_from_prepared", "clip_from_video",
    "estimate_offset", "lip_sync_score", "load_sync_encoder", "make_clip", "save_sync_encoder",
    "shift_audio", "shift_frame_features", "train_sync_encoder",
]
