"""Conditioning shared by recipes: the speech code that drives motion fields (``SpeechCondition``) and
the render-time conditioner (audio windows + an expression source -> per-frame conditions)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import Tensor, nn

from talksplat.engine.contract import Conditioner, Conditions
from talksplat.errors import TalksplatError, UsageError
from talksplat.features.lipstate import LipBasis, fit_audio_to_lips
from talksplat.fields.motion import (
    AudioEncoder,
    AudioEncoderConfig,
    LipStateEncoder,
    LipStateEncoderConfig,
    temporal_window,
)

# A frame far from both ends of a clip, to read a temporal window's extent off ``temporal_window``.
_PROBE_FRAME = 1_000_000


def window_extent(smoothing_frames: int) -> tuple[int, int]:
    """(frames before, frames after) a frame whose audio windows a ``smoothing_frames`` temporal
    attention reads (fields.motion.temporal_window), computed from that function, not re-derived."""
    if not isinstance(smoothing_frames, int) or smoothing_frames < 1:
        raise TalksplatError("the audio encoder does not declare its temporal window, so it cannot be streamed")
    idx = temporal_window(_PROBE_FRAME, 2 * _PROBE_FRAME, smoothing_frames)
    return _PROBE_FRAME - int(idx.min()), int(idx.max()) - _PROBE_FRAME


class AudioExpressionConditioner(Conditioner):
    """``{"audio_code": encoder(windows, index), "expression": ...}``: the audio encoder's smoothed code
    and the expression coefficients of the pose's source frame (``video``) or the training median
    (``neutral``)."""

    def __init__(self, audio_encoder: nn.Module, expressions: Tensor, neutral: Tensor, audio_feature: str) -> None:
        self.audio_encoder = audio_encoder
        self.expressions = expressions
        self.neutral = neutral
        self.audio_feature = audio_feature
        self.look_behind, self.look_ahead = window_extent(audio_encoder.config.smoothing_frames)

    @torch.no_grad()
    def conditions(self, windows: Tensor, index: int, source_frame: int, expression: str) -> Conditions:
        if expression not in self.expression_modes:
            raise UsageError(f"expression must be one of {', '.join(self.expression_modes)} (got {expression!r})")
        windows = windows.to(self.expressions.device)
        code = self.audio_encoder(windows, index)
        expr = self.expressions[source_frame] if expression == "video" else self.neutral
        return {"audio_code": code, "expression": expr, **_lip_state(self.audio_encoder, windows, index)}


def _lip_state(encoder: nn.Module, windows: Tensor, index: int) -> Conditions:
    """``{"lip_state": the frame's lip state predicted from its audio window}`` for a lip-state
    encoder (a landmark rig reads it); nothing for a learned one."""
    if not isinstance(encoder, LipStateEncoder):
        return {}
    return {"lip_state": encoder.predict(windows[index:index + 1])[0]}


SPEECH_CONDITIONS = ("lipstate", "learned")


class SpeechCondition(nn.Module):
    """Audio -> the per-frame code that drives a recipe's motion fields (a shared part).

    ``lipstate``: a ridge map from the audio window to the lip shape (features.lipstate), fitted in
    closed form on the training frames, then a small network with temporal attention; training feeds
    it the *tracked* lip states (teacher forcing, optionally with noise), rendering the states
    *predicted* from audio (``fit=False``: the map comes from a checkpoint; no training then). ``learned``: the paper-style AudioNet on the raw feature windows, trained
    end to end (it memorises short clips; docs/training.md).
    """

    def __init__(self, data, kind: str, lip_state: LipStateEncoderConfig, audio: AudioEncoderConfig,
                 noise: float = 0.0, max_gain: float = 2.0, fit: bool = True) -> None:
        super().__init__()
        if kind not in SPEECH_CONDITIONS:
            raise ValueError(f"audio condition must be one of {SPEECH_CONDITIONS} (got {kind!r})")
        self.data, self.noise = data, noise
        self.lip_states: Tensor | None = None
        self.lip_basis: LipBasis | None = None    # the tracked shapes' basis, when fitted here
        self.fit_summary: dict = {}
        if kind == "lipstate" and not fit:    # the fitted map is in the checkpoint (buffers)
            self.encoder = LipStateEncoder(replace(lip_state, input_dim=int(np.prod(data.audio.shape[1:]))))
        elif kind == "lipstate":
            self.encoder = self._fit_lip_state_encoder(lip_state, max_gain)
        else:
            self.encoder = AudioEncoder(replace(audio, window=int(data.audio.shape[1]), input_dim=int(data.audio.shape[2])))
            self.encoder.fit_normalisation(data.audio[torch.as_tensor(data.train_frames)])

    @property
    def out_dim(self) -> int:
        return int(self.encoder.config.out_dim)

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        if self.lip_states is not None:        # tracked states (not saved: refitted from the subject)
            self.lip_states = fn(self.lip_states)
        return self

    def _fit_lip_state_encoder(self, cfg: LipStateEncoderConfig, max_gain: float) -> LipStateEncoder:
        data, train = self.data, self.data.train_frames
        basis = LipBasis.fit(data.lip_shapes[train], cfg.lip_dims)
        states = basis.coefficients(data.lip_shapes)
        fit = fit_audio_to_lips(data.audio[torch.as_tensor(train)].numpy(), states[train], max_gain=max_gain)
        encoder = LipStateEncoder(replace(cfg, input_dim=int(np.prod(data.audio.shape[1:]))))
        encoder.set_map(fit.x_mean, fit.x_std, fit.weight, fit.bias)
        self.lip_states, self.lip_basis = torch.from_numpy(states), basis
        self.fit_summary = {"ridge": fit.ridge, "cv_correlation": [round(float(c), 3) for c in fit.cv_correlation],
                            "gain": [round(float(g), 3) for g in fit.gain],
                            "explained_variance": [round(float(e), 3) for e in basis.explained]}
        return encoder

    def conditions(self, frame: int) -> Conditions:
        """Frame ``frame``'s own conditions: the code from its recorded audio, its expression."""
        return {"audio_code": self.encoder(self.data.audio, frame), "expression": self.data.expressions[frame],
                **_lip_state(self.encoder, self.data.audio, frame)}

    def training_conditions(self, frame: int) -> Conditions:
        """Lipstate: the tracked lip states (plus noise) teacher-force the code; learned: the audio."""
        if self.lip_states is None:
            return self.conditions(frame)
        noisy = self.lip_states + self.noise * torch.randn_like(self.lip_states)
        return {"audio_code": self.encoder.from_states(noisy, frame), "expression": self.data.expressions[frame],
                "lip_state": noisy[frame]}

    def conditioner(self, audio_feature: str) -> AudioExpressionConditioner:
        """For new audio: the code from the audio, the expression of the pose's source frame (or the
        training median)."""
        train = torch.as_tensor(self.data.train_frames)
        neutral = self.data.expressions[train].median(dim=0).values
        return AudioExpressionConditioner(self.encoder, self.data.expressions, neutral, audio_feature)
