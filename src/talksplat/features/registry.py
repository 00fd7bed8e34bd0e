"""Audio features chosen by name (:class:`AudioFeatures`) and the default features ``prepare`` writes.

This is the dispatcher over every audio feature: it sits above the primitives
(:mod:`talksplat.features.audio`: timing, log-mel, caching) and the extractors (phones, the sync
encoder, the pretrained encoders), so that the extractors can use the primitives without an import
cycle. The model-based extractors are imported only when such a feature is asked for (they load torch
and, for wav2vec2/HuBERT, transformers).

Features by name: ``mel`` (T, 16, 80), ``phones`` (T, 40), ``mel+phones`` (T, 16, 120),
``avsync[:PATH]`` (T, D), ``wav2vec2:PATH`` / ``hubert:PATH`` (T, 16, D).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talksplat.errors import TalksplatError, UsageError
from talksplat.features.audio import (
    MEL_BANDS,
    WINDOW_STEPS,
    CacheKey,
    cache_valid,
    file_digest,
    fit_to_frames,
    frame_samples,
    load_audio_16k,
    log_mel_steps,
    mel_windows,
    num_frames_for_samples,
    step_windows,
    validate_samples,
    window_step_range,
    write_cached,
)
from talksplat.features.phones import NUM_PHONES, phone_posteriors, phone_step_posteriors
from talksplat.io.paths import require_file

# ----------------------------------------------------------------------------------------------------
# Default features for `prepare`

DEFAULT_FEATURES = ("mel", "phones")


def compute_default_features(audio_path: Path, n_frames: int, out_dir: Path) -> dict[str, Path]:
    """Write ``mel.npy`` (n_frames, 16, 80) and ``phones.npy`` (n_frames, 40), float32, to ``out_dir``.

    Each has a ``<name>.json`` sidecar (input file SHA-256, n_frames, feature version); outputs
    whose sidecar matches the current input are reused without decoding anything.

    Returns:
        {"mel": path, "phones": path}
    """
    audio_path, out_dir = require_file(audio_path, "audio"), Path(out_dir)
    if n_frames <= 0:
        raise TalksplatError(f"n_frames must be positive (got {n_frames})")
    digest = file_digest(audio_path)
    shapes = {"mel": (n_frames, WINDOW_STEPS, MEL_BANDS), "phones": (n_frames, NUM_PHONES)}
    outputs = {name: out_dir / f"{name}.npy" for name in DEFAULT_FEATURES}
    pending = [name for name in DEFAULT_FEATURES
               if not cache_valid(outputs[name], out_dir / f"{name}.json",
                                   CacheKey(name, digest, n_frames), shapes[name])]
    if pending:
        samples = fit_to_frames(load_audio_16k(audio_path), n_frames)
        compute = {"mel": lambda: mel_windows(samples, n_frames),
                   "phones": lambda: phone_posteriors(samples, n_frames)}
        for name in pending:
            write_cached(outputs[name], out_dir / f"{name}.json", CacheKey(name, digest, n_frames),
                          compute[name]())
    return outputs


# ----------------------------------------------------------------------------------------------------
# One interface over all audio features


@dataclass(frozen=True)
class FeatureSpec:
    """A parsed feature name: ``kind`` in mel / phones / mel+phones / avsync / wav2vec2 / hubert."""

    kind: str
    path: str | None = None

    @property
    def name(self) -> str:
        return self.kind if self.path is None else f"{self.kind}:{self.path}"


FEATURE_KINDS = ("mel", "phones", "mel+phones", "avsync", "wav2vec2", "hubert")
KINDS_NEEDING_PATH = ("wav2vec2", "hubert")


def parse_feature_name(name: str) -> FeatureSpec:
    """Parse ``mel``, ``phones``, ``mel+phones``, ``avsync[:PATH]``, ``wav2vec2:PATH``, ``hubert:PATH``."""
    kind, _, path = name.strip().partition(":")
    kind = kind.strip().lower()
    if kind not in FEATURE_KINDS:
        raise UsageError(f"unknown audio feature {name!r}; choose one of "
                         "mel, phones, mel+phones, avsync[:MODEL_DIR], wav2vec2:DIR, hubert:DIR")
    if kind in KINDS_NEEDING_PATH and not path:
        raise UsageError(f"audio feature {kind!r} needs a local model folder: write {kind}:/path/to/model")
    if kind in ("mel", "phones", "mel+phones") and path:
        raise UsageError(f"audio feature {kind!r} takes no path (got {name!r})")
    return FeatureSpec(kind, path or None)


class AudioFeatures:
    """Audio features chosen by name, aligned to 25 fps frames, optionally cached on disk.

        feats = AudioFeatures("mel+phones", cache_dir="cache/")
        x = feats.compute("speech.wav")            # (T, 16, 120) float32
        feats.frame_shape                          # (16, 120)

    ``avsync`` without a path uses the sync encoder shipped with the package; ``avsync:DIR`` a
    checkpoint saved by ``talksplat sync-train``.
    """

    def __init__(self, name: str, cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.spec = parse_feature_name(name)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._extractor = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """Shape of one frame's feature: (16, D) for windowed features, (D,) otherwise."""
        kind = self.spec.kind
        if kind == "mel":
            return (WINDOW_STEPS, MEL_BANDS)
        if kind == "phones":
            return (NUM_PHONES,)
        if kind == "mel+phones":
            return (WINDOW_STEPS, MEL_BANDS + NUM_PHONES)
        return self._get_extractor().frame_shape

    def _get_extractor(self):
        if self._extractor is None:
            if self.spec.kind == "avsync":
                from talksplat.features.sync import SyncFeatureExtractor

                self._extractor = SyncFeatureExtractor.load(self.spec.path)
            else:
                from talksplat.features.pretrained import PretrainedAudioEncoder

                self._extractor = PretrainedAudioEncoder(self.spec.kind, self.spec.path)
        return self._extractor

    def compute_samples(self, samples: np.ndarray, n_frames: int | None = None) -> np.ndarray:
        """Features of 16 kHz mono ``samples`` (N,), (n_frames, *frame_shape) float32."""
        samples, n_frames = frame_samples(validate_samples(samples), n_frames)
        kind = self.spec.kind
        if kind == "mel":
            return mel_windows(samples, n_frames)
        if kind == "phones":
            return phone_posteriors(samples, n_frames)
        if kind == "mel+phones":
            first, count = window_step_range(n_frames)
            steps = np.concatenate([log_mel_steps(samples, first, count),
                                    phone_step_posteriors(samples, first, count)], axis=1)
            return step_windows(steps, n_frames)
        return self._get_extractor().compute(samples, n_frames)

    def compute(self, audio_path: str | os.PathLike[str], n_frames: int | None = None) -> np.ndarray:
        """Features of the audio in ``audio_path`` (any format FFmpeg reads), cached in ``cache_dir``.

        Returns:
            (n_frames, *frame_shape) float32; n_frames defaults to the audio's frame count.
        """
        audio_path = require_file(audio_path, "audio")
        if self.cache_dir is None:
            return self.compute_samples(load_audio_16k(audio_path), n_frames)
        digest = file_digest(audio_path)
        samples = None
        if n_frames is None:
            samples = load_audio_16k(audio_path)
            n_frames = num_frames_for_samples(samples.size)
        key = CacheKey(self._cache_feature_id(), digest, n_frames)
        stem = hashlib.sha256(json.dumps(key.to_json(), sort_keys=True).encode()).hexdigest()[:20]
        npy, meta = self.cache_dir / f"{stem}.npy", self.cache_dir / f"{stem}.json"
        if cache_valid(npy, meta, key, (n_frames, *self.frame_shape)):
            return np.load(npy, allow_pickle=False)
        if samples is None:
            samples = load_audio_16k(audio_path)
        features = self.compute_samples(samples, n_frames)
        write_cached(npy, meta, key, features)
        return features

    def _cache_feature_id(self) -> str:
        """The feature's name plus, for model-based features, a fingerprint of the model."""
        if self.spec.kind in ("mel", "phones", "mel+phones"):
            return self.spec.kind
        return f"{self.spec.kind}:{self._get_extractor().fingerprint}"
