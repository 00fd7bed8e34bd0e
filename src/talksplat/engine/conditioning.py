"""Conditioners shared by recipes: audio windows (+ an expression source) -> per-frame conditions."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from talksplat.engine.contract import Conditioner, Conditions
from talksplat.errors import TalksplatError
from talksplat.fields.motion import temporal_window

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
            raise TalksplatError(f"expression must be one of {', '.join(self.expression_modes)} (got {expression!r})")
        code = self.audio_encoder(windows, index)
        expr = self.expressions[source_frame] if expression == "video" else self.neutral
        return {"audio_code": code, "expression": expr}
