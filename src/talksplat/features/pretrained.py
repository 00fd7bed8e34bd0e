"""wav2vec 2.0 / HuBERT audio encoders, loaded only from a local folder (never downloaded).

The folder is what ``save_pretrained`` writes (``config.json`` + weights, optionally a
``preprocessor_config.json``). Hidden states come at 50 Hz (20 ms steps); like the mel windows,
each video frame gets the 16 steps centred on it: frame ``t`` (centre ``(t + 0.5) / 25`` s = 50 Hz
step ``2t + 1``) takes steps ``2t - 7 .. 2t + 8`` -> (T, 16, D); steps outside the clip repeat the
edge. ``transformers`` is optional: imported only here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from talksplat.errors import TalksplatError, UsageError
from talksplat.features.audio import FPS, SAMPLE_RATE, WINDOW_STEPS

ENCODER_RATE = 50                              # wav2vec2 / HuBERT hidden states per second
STEPS_PER_FRAME = ENCODER_RATE // FPS          # 2
WINDOW_LEAD = (WINDOW_STEPS - STEPS_PER_FRAME) // 2   # 7 steps before the frame's own 2
MODEL_TYPES = {"wav2vec2": ("wav2vec2",), "hubert": ("hubert",)}
CHUNK_SECONDS = 30                             # encode long audio in chunks (attention is quadratic)


def _import_transformers():
    try:
        import transformers
    except ImportError as exc:
        raise TalksplatError("wav2vec2/hubert features need transformers: pip install transformers") from exc
    return transformers


class PretrainedAudioEncoder:
    """A local wav2vec2/HuBERT model as a (T, 16, D) audio feature."""

    def __init__(self, kind: str, model_dir: str | Path) -> None:
        if kind not in MODEL_TYPES:
            raise UsageError(f"unknown pretrained audio encoder {kind!r} (use wav2vec2 or hubert)")
        self.kind = kind
        self.model_dir = Path(model_dir).expanduser()
        config_path = self.model_dir / "config.json"
        if not config_path.is_file():
            raise UsageError(f"{kind} model folder not found or has no config.json: {self.model_dir}; "
                             "give the folder a model was saved to with save_pretrained")
        try:
            model_type = json.loads(config_path.read_text()).get("model_type")
        except ValueError as exc:
            raise UsageError(f"{config_path} is not valid JSON; re-save the model") from exc
        if model_type not in MODEL_TYPES[kind]:
            raise UsageError(f"{self.model_dir} holds a {model_type!r} model, not {kind}; "
                             f"use the matching feature name (wav2vec2:DIR or hubert:DIR)")
        transformers = _import_transformers()
        model_class = transformers.Wav2Vec2Model if kind == "wav2vec2" else transformers.HubertModel
        try:
            self.model = model_class.from_pretrained(str(self.model_dir), local_files_only=True).eval()
        except (OSError, ValueError, RuntimeError) as exc:
            raise TalksplatError(f"cannot load the {kind} model in {self.model_dir}: "
                                 f"{str(exc).splitlines()[0]}") from exc
        self.normalise = self._wants_normalisation()
        self.fingerprint = self._fingerprint()

    def _wants_normalisation(self) -> bool:
        """Zero-mean unit-variance input, as the model's feature extractor says (default: yes)."""
        pre = self.model_dir / "preprocessor_config.json"
        if pre.is_file():
            try:
                return bool(json.loads(pre.read_text()).get("do_normalize", True))
            except ValueError:
                pass
        return True

    def _fingerprint(self) -> str:
        h = hashlib.sha256()
        for path in sorted(self.model_dir.glob("*")):
            if path.is_file() and path.suffix in (".json", ".safetensors", ".bin"):
                stat = path.stat()
                h.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        return h.hexdigest()[:16]

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return (WINDOW_STEPS, int(self.model.config.hidden_size))

    def hidden_states(self, samples: np.ndarray) -> np.ndarray:
        """(S, D) last hidden states at 50 Hz of 16 kHz mono ``samples`` (N,)."""
        import torch

        chunk = CHUNK_SECONDS * SAMPLE_RATE
        parts = []
        with torch.no_grad():
            for start in range(0, samples.size, chunk):
                x = samples[start:start + chunk].astype(np.float32)
                if self.normalise:
                    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
                out = self.model(torch.from_numpy(x)[None]).last_hidden_state[0]
                parts.append(out.numpy())
        return np.concatenate(parts).astype(np.float32)

    def compute(self, samples: np.ndarray, n_frames: int) -> np.ndarray:
        """(n_frames, 16, D) float32 for ``samples`` already fitted to ``n_frames * 640``."""
        states = self.hidden_states(samples)
        index = (np.arange(n_frames)[:, None] * STEPS_PER_FRAME - WINDOW_LEAD
                 + np.arange(WINDOW_STEPS)[None, :])
        return states[np.clip(index, 0, len(states) - 1)]
