"""The audio-visual sync encoder's audio branch as a motion-field audio encoder (SyncTalk++ Face-Sync
Controller): log-mel windows -> the sync encoder's embedding (frozen) -> a small learned code with
temporal attention over neighbouring frames.

The sync encoder comes from ``talksplat sync-train`` (``features.sync_model``): by default it is
trained here on the subject's own video (lip landmarks vs log-mel; deterministic for a step count
and seed, and cached under ``SUBJECT/audio/cache/``), or read from a folder the user trained on
other speakers. Its log-mel input is standardised with the *training clip's* statistics, fixed and
saved with the weights, instead of each clip's own (``features.sync_model.standardise``), so that a
frame's code depends only on its own window and the encoder can stream.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from talksplat.features.sync_model import AudioEncoder as SyncMelEncoder
from talksplat.features.sync_model import SyncEncoder, SyncEncoderConfig
from talksplat.fields.motion import attention_pool, temporal_attention, temporal_window

SYNC_CACHE_PREFIX = "synctalkpp-sync"


@dataclass
class SyncAudioConfig:
    # Where the sync encoder comes from: "" trains one on the subject's own video (cached);
    # a folder written by `talksplat sync-train` uses that one (e.g. trained on other speakers).
    model_dir: str = ""
    train_steps: int = 600          # own-video training steps (deterministic; the time budget is unused)
    out_dim: int = 32
    hidden: int = 64
    smoothing_frames: int = 8


class SyncAudioEncoder(nn.Module):
    """(T, 16, 80) log-mel windows -> per-frame code of ``frame`` (out_dim,), like fields.motion's
    AudioEncoder. ``config.smoothing_frames`` declares the temporal window (streaming reads it)."""

    def __init__(self, config: SyncAudioConfig, sync: SyncEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.sync = SyncMelEncoder(sync)
        self.sync.requires_grad_(False)        # a fixed feature extractor, as the paper's encoder
        self.register_buffer("mel_mean", torch.zeros(sync.mel_bands))
        self.register_buffer("mel_scale", torch.ones(()))
        self.mlp = nn.Sequential(nn.Linear(sync.embed_dim, config.hidden), nn.LeakyReLU(0.02, True),
                                 nn.Linear(config.hidden, config.out_dim))
        self.center = nn.Sequential(nn.Linear(sync.embed_dim, config.hidden), nn.LeakyReLU(0.02, True),
                                    nn.Linear(config.hidden, config.out_dim))
        self.attention = temporal_attention(config.out_dim)

    @property
    def embed_dim(self) -> int:
        return int(self.sync.head.out_features)

    @torch.no_grad()
    def set_sync_encoder(self, encoder: SyncMelEncoder, training_mel: Tensor) -> None:
        """Installs trained sync weights and the training clip's mel statistics (per band mean, one
        scale, as ``features.sync_model.standardise``)."""
        self.sync.load_state_dict(encoder.state_dict())
        flat = training_mel.reshape(-1, training_mel.shape[-1])
        self.mel_mean.copy_(flat.mean(0))
        self.mel_scale.copy_((flat - flat.mean(0)).std(0).mean() + 1e-6)

    def embed(self, windows: Tensor) -> Tensor:
        """(T, 16, 80) log-mel -> (T, D) unit sync embeddings (no gradient: the encoder is fixed)."""
        with torch.no_grad():
            return self.sync((windows - self.mel_mean) / self.mel_scale)

    def forward(self, windows: Tensor, frame: int) -> Tensor:
        idx = temporal_window(frame, windows.shape[0], self.config.smoothing_frames)
        return self.code(self.embed(windows[idx]), idx, frame)

    def code(self, embeddings: Tensor, idx: Tensor, frame: int) -> Tensor:
        """The code of ``frame`` from the sync ``embeddings`` (S, D) of the frames ``idx``
        (``temporal_window``'s), e.g. embeddings a renderer kept from earlier frames."""
        code = attention_pool(self.mlp(embeddings), self.attention)
        return code + self.center(embeddings[int(torch.nonzero(idx == frame)[0, 0])])


# ------------------------------------------------------------------------------------------ training
def subject_sync_encoder(subject_dir: Path, frames: tuple[int, int], steps: int, seed: int,
                         quiet: bool = True) -> tuple[SyncEncoder, dict]:
    """The audio branch of a sync encoder trained on frames ``start:stop`` (the training split) of
    the subject's own video for ``steps`` steps (cached under ``SUBJECT/audio/cache/``; the same
    inputs give the same weights), and what it was trained on."""
    from talksplat.features.sync_model import (
        WEIGHTS_NAME,
        SyncTrainConfig,
        clip_from_prepared,
        load_sync_encoder,
        train_sync_encoder,
    )

    subject_dir = Path(subject_dir)
    threads = torch.get_num_threads()
    # minutes is a generous cap: the step count decides, so the result does not depend on load. One
    # thread: the small networks gain nothing from two, and on a busy machine two were 6x slower.
    cfg = replace(SyncTrainConfig(), max_steps=steps, minutes=600.0, seed=seed, threads=1)
    key = _cache_key(subject_dir, cfg, frames)
    cache = subject_dir / "audio" / "cache" / f"{SYNC_CACHE_PREFIX}-{key}"
    if (cache / WEIGHTS_NAME).is_file():
        model, meta = load_sync_encoder(cache)
        return model, {"source": "subject's own video (cached)", "steps": meta.get("steps")}
    clip = clip_from_prepared(subject_dir).slice(*frames)
    result = train_sync_encoder([clip], cfg, out_dir=cache, progress=not quiet)
    torch.set_num_threads(threads)
    return result.model, {"source": "subject's own video", "steps": result.steps,
                                "seconds": round(result.seconds, 1),
                                "train_shift_accuracy": round(float(result.shift_accuracy), 3)}


def folder_sync_encoder(model_dir: str) -> tuple[SyncEncoder, dict]:
    from talksplat.features.sync_model import load_sync_encoder

    model, meta = load_sync_encoder(model_dir)
    return model, {"source": str(model_dir), "clips": meta.get("clips")}


def _cache_key(subject_dir: Path, cfg, frames: tuple[int, int]) -> str:
    """Digest of what the trained weights depend on: the audio, the landmarks, the frames and the
    settings (not the thread count)."""
    settings = {k: v for k, v in cfg.to_json().items() if k != "threads"}
    settings["frames"] = [int(f) for f in frames]
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for rel in ("audio/audio.wav", "landmarks.npy"):
        path = subject_dir / rel
        if path.is_file():
            digest.update(_file_digest(path).encode())
    return digest.hexdigest()[:16]


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

