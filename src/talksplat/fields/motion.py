"""Grid-based motion fields: point-wise deformation of Gaussians conditioned on audio and expression.

TalkingGaussian (eqs. 3-6): each Gaussian's canonical centre is encoded by a tri-plane hash grid;
region attention vectors computed from that encoding weight the audio and expression conditions per
position; an MLP maps [encoding, weighted audio, weighted expression] to a deformation
(delta position, delta log-scale, delta quaternion) added to the raw Gaussian parameters.

The face branch predicts all three and is conditioned on audio + the 7 expression coefficients; the
inside-mouth branch predicts only delta position from audio with a lighter grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from talksplat.features.lipstate import PREDICTED_STATE_LIMIT
from talksplat.fields.hashgrid import HashGridConfig, TriPlaneHashEncoding

# Deformation outputs (TalkingGaussian) and, for the "appearance modification" ablation of its
# Table 4, colour and opacity offsets instead.
DEFORM_OUTPUTS = {"position": 3, "scale": 3, "rotation": 4, "color": 3, "opacity": 1}
# Gaussians per block of the inference MLP (its activations, 4096 x 64 floats, fit the L2 cache).
INFERENCE_ROW_BLOCK = 4096


@dataclass
class MotionFieldConfig:
    grid: HashGridConfig = field(default_factory=lambda: HashGridConfig(log2_hashmap_size=14))
    audio_dim: int = 32
    expression_dim: int = 7
    hidden: int = 64
    layers: int = 3
    attention_hidden: int = 32
    outputs: tuple[str, ...] = ("position", "scale", "rotation")
    # Canonical centres are mapped into the grid's [-bound, bound]^3 by this box, set from the
    # initial Gaussians and padded, so growth during training stays inside the grid.
    box_padding: float = 0.2
    # One unit of predicted position offset, as a fraction of the box's largest side. Worlds come in
    # any unit (talksplat's head frame is in mm): without this, an MLP starting at zero needs
    # thousands of Adam steps before lips move by millimetres, and the mouth never learns to move.
    position_unit: float = 0.05
    # Per-position attention vectors weighting the audio and expression conditions (TalkingGaussian's
    # region attention, eq. 4). False feeds the conditions to the MLP as they are (UniGS: one field
    # for every region, conditions concatenated to the position features).
    region_attention: bool = True
    # Size of further global conditions (e.g. UniGS's head pose), concatenated to the MLP input as
    # they are; 0 = none.
    extra_dim: int = 0

    def validate(self, where: str = "deformation") -> None:
        """One-line errors naming the field (``where``: its config name, e.g. ``face_motion``)."""
        unknown = sorted(set(self.outputs) - set(DEFORM_OUTPUTS))
        if not self.outputs or unknown:
            found = f"unknown {unknown}" if unknown else "empty"
            raise ValueError(f"{where}.outputs: {found}; use some of {', '.join(DEFORM_OUTPUTS)}")
        if self.extra_dim < 0:
            raise ValueError(f"{where}.extra_dim must be >= 0")


def mlp(in_dim: int, hidden: int, out_dim: int, layers: int) -> nn.Sequential:
    dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
    modules: list[nn.Module] = []
    for i in range(len(dims) - 1):
        modules.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            modules.append(nn.ReLU(inplace=True))
    return nn.Sequential(*modules)


@dataclass
class Deformation:
    """Per-Gaussian offsets to the raw parameters (zeros where a branch does not predict them)."""

    d_means: Tensor         # [N, 3]
    d_log_scales: Tensor    # [N, 3]
    d_quats: Tensor         # [N, 4]
    d_colors: Tensor        # [N, 3]
    d_opacity_logits: Tensor  # [N]


class MotionField(nn.Module):
    """forward(canonical_means[N, 3], audio[A], expression[E]) -> Deformation."""

    def __init__(self, config: MotionFieldConfig, box_min: Tensor, box_max: Tensor) -> None:
        super().__init__()
        self.config = config
        config.validate()
        pad = (box_max - box_min) * config.box_padding
        self.register_buffer("position_unit", ((box_max - box_min).max() * config.position_unit).float())
        self.register_buffer("box_min", (box_min - pad).float())
        self.register_buffer("box_max", (box_max + pad).float())
        self.encoding = TriPlaneHashEncoding(config.grid)
        enc = self.encoding.output_dim
        attend = config.region_attention
        self.audio_attention = mlp(enc, config.attention_hidden, config.audio_dim, 2) if attend else None
        self.expression_attention = (mlp(enc, config.attention_hidden, config.expression_dim, 2)
                                     if config.expression_dim and attend else None)
        out_dim = sum(DEFORM_OUTPUTS[name] for name in config.outputs)
        self.head = mlp(enc + config.audio_dim + config.expression_dim + config.extra_dim, config.hidden, out_dim,
                        config.layers)
        # Start from the identity deformation: stage 2 begins where the static stage ended.
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def normalise(self, means: Tensor) -> Tensor:
        bound = self.config.grid.bound
        unit = (means - self.box_min) / (self.box_max - self.box_min)
        return (unit * 2 - 1) * bound

    def forward(self, canonical_means: Tensor, audio: Tensor, expression: Tensor | None = None,
                extra: Tensor | None = None, extra_gate: Tensor | None = None) -> Deformation:
        """``extra_gate`` [N]: a per-Gaussian weight of the extra conditions (0 = that Gaussian does
        not see them, as if they sat at 0); None = 1 for every Gaussian."""
        if self.config.expression_dim and expression is None:
            raise ValueError("this motion field needs expression coefficients")
        if self.config.extra_dim and extra is None:
            raise ValueError(f"this motion field needs {self.config.extra_dim} extra condition values")
        if not self.training and not torch.is_grad_enabled():
            return self._forward_cached(canonical_means, audio, expression, extra, extra_gate)
        # The canonical positions are learned by the static stage; the motion field treats them as
        # inputs, so no gradient flows into them through the grid.
        encoded = self.encoding(self.normalise(canonical_means.detach()), input_gradients=False)
        n = encoded.shape[0]
        if not self.config.region_attention:
            return self._forward_shared_conditions(encoded, audio, expression, extra, extra_gate)
        conditions = [_weighted(audio.expand(n, -1), self.audio_attention, encoded)]
        if self.config.expression_dim:
            conditions.append(_weighted(expression.expand(n, -1), self.expression_attention, encoded))
        if self.config.extra_dim:
            conditions.append(extra.expand(n, -1) if extra_gate is None else extra * extra_gate[:, None])
        raw = self.head(torch.cat([encoded, *conditions], dim=-1))
        return self._split(raw, n)

    def _forward_shared_conditions(self, encoded: Tensor, audio: Tensor, expression: Tensor | None,
                                   extra: Tensor | None, extra_gate: Tensor | None = None) -> Deformation:
        """Without region attention the conditions are the same for every Gaussian: their share of
        the first layer is one vector added to every row, instead of an (N, conditions) input (the
        same function; about a quarter less work for UniGS's 46 condition values). A gated extra
        condition's share is one vector scaled per row."""
        first = self.head[0]
        enc_dim = encoded.shape[1]
        x0 = enc_dim + self.config.audio_dim + self.config.expression_dim
        gated = self.config.extra_dim and extra_gate is not None
        present = [c for c in (audio, expression if self.config.expression_dim else None,
                               extra if self.config.extra_dim and not gated else None) if c is not None]
        end = x0 if gated else None      # the extra columns' share is added per row below
        shared = torch.cat(present) @ first.weight[:, enc_dim:end].T + first.bias
        hidden = encoded @ first.weight[:, :enc_dim].T + shared
        if gated:
            hidden = hidden + extra_gate[:, None] * (extra @ first.weight[:, x0:].T)
        return self._split(self.head[1:](hidden), encoded.shape[0])

    def _forward_cached(self, canonical_means: Tensor, audio: Tensor, expression: Tensor | None,
                        extra: Tensor | None = None, extra_gate: Tensor | None = None) -> Deformation:
        """Inference: the grid encoding, the attention vectors and the encoding's share of the first
        layer depend only on the (fixed) canonical positions, so they are computed once; per frame
        only the conditions' share and the remaining layers run. Same function as the training path
        (up to float rounding): (attention * c) @ W.T == attention @ (W * c).T, so the per-frame work
        on the N Gaussians is one fused multiply-add instead of scaling, multiplying and adding."""
        static = self._static_part(canonical_means)
        weight = self.head[0].weight
        cfg, enc_dim = self.config, self.encoding.output_dim
        x0 = enc_dim + cfg.audio_dim + cfg.expression_dim
        parts = [audio, expression] if cfg.expression_dim else [audio]
        if any(part.ndim == 2 for part in parts):     # per-Gaussian conditions (e.g. masked by region)
            n = static["projected"].shape[0]
            parts = [part.expand(n, -1) if part.ndim == 1 else part for part in parts]
        conditions = torch.cat(parts, dim=-1)
        condition_weight = weight[:, enc_dim:x0]
        extra_share = extra @ weight[:, x0:].T if cfg.extra_dim else None
        n = static["projected"].shape[0]
        if extra_share is not None and extra_gate is not None:   # [N, hidden]: one share per Gaussian
            extra_share = extra_gate[:, None] * extra_share
        # On one thread (e.g. frames rendered in parallel, one thread each), row blocks keep each
        # block's hidden activations in the CPU cache between the layers: 20% less time for 50k
        # Gaussians, the same values. On several threads the blocks' synchronisation costs more.
        if torch.get_num_threads() > 1 or n <= INFERENCE_ROW_BLOCK:
            return self._split(self._remaining_layers(static, slice(0, n), conditions, condition_weight, extra_share), n)
        raw = None
        for start in range(0, n, INFERENCE_ROW_BLOCK):
            rows = slice(start, min(start + INFERENCE_ROW_BLOCK, n))
            block_conditions = conditions if conditions.ndim == 1 else conditions[rows]
            block_extra = extra_share if extra_share is None or extra_share.ndim == 1 else extra_share[rows]
            out = self._remaining_layers(static, rows, block_conditions, condition_weight, block_extra)
            if raw is None:
                raw = out.new_empty(n, out.shape[1])
            raw[rows] = out
        return self._split(raw, n)

    def _remaining_layers(self, static: dict[str, Tensor], rows: slice, conditions: Tensor, condition_weight: Tensor,
                          extra_share: Tensor | None) -> Tensor:
        """The head's output for the Gaussians ``rows`` (``conditions``: theirs, or one vector for all)."""
        hidden = self._first_layer(static, rows, conditions, condition_weight)
        if extra_share is not None:
            hidden = hidden + extra_share
        return self.head[1:](hidden)

    @staticmethod
    def _first_layer(static: dict[str, Tensor], rows: slice, conditions: Tensor, condition_weight: Tensor) -> Tensor:
        projected = static["projected"][rows]
        if "attention" in static and conditions.ndim == 1:
            return torch.addmm(projected, static["attention"][rows], (condition_weight * conditions).T)
        if "attention" in static:
            return projected + (static["attention"][rows] * conditions) @ condition_weight.T
        return projected + conditions @ condition_weight.T

    def _static_part(self, canonical_means: Tensor) -> dict[str, Tensor]:
        # Keyed by the tensor and every parameter's version: any in-place update invalidates it.
        key = (canonical_means.data_ptr(), canonical_means._version, tuple(canonical_means.shape),
               tuple(p._version for p in self.parameters()))
        cache = getattr(self, "_inference_cache", None)
        if cache is not None and cache[0] == key:
            return cache[1]
        encoded = self.encoding(self.normalise(canonical_means), input_gradients=False)
        first = self.head[0]
        static = {"projected": encoded @ first.weight[:, :encoded.shape[1]].T + first.bias}
        if self.audio_attention is not None:
            # audio then expression attention side by side, in the order of the first layer's inputs
            parts = [self.audio_attention(encoded)]
            if self.expression_attention is not None:
                parts.append(self.expression_attention(encoded))
            static["attention"] = torch.cat(parts, dim=1).contiguous()
        self._inference_cache = (key, static)
        return static

    def train(self, mode: bool = True) -> MotionField:
        self._inference_cache = None
        return super().train(mode)

    def _split(self, raw: Tensor, n: int) -> Deformation:
        parts = dict(zip(self.config.outputs, raw.split([DEFORM_OUTPUTS[o] for o in self.config.outputs], -1)))
        for name, dim in DEFORM_OUTPUTS.items():
            if name not in parts:
                parts[name] = raw.new_zeros(n, dim)
        return Deformation(d_means=parts["position"] * self.position_unit, d_log_scales=parts["scale"],
                           d_quats=parts["rotation"], d_colors=parts["color"],
                           d_opacity_logits=parts["opacity"][:, 0])

    def region_attention(self, canonical_means: Tensor) -> dict[str, Tensor]:
        """Per-Gaussian attention magnitudes (for visualising which regions follow which signal);
        empty without region attention."""
        if self.audio_attention is None:
            return {}
        with torch.no_grad():
            encoded = self.encoding(self.normalise(canonical_means), input_gradients=False)
            out = {"audio": self.audio_attention(encoded).abs().mean(-1)}
            if self.expression_attention is not None:
                out["expression"] = self.expression_attention(encoded).abs().mean(-1)
        return out


def _weighted(condition: Tensor, attention: nn.Module | Tensor | None, encoded: Tensor | None = None) -> Tensor:
    """A condition weighted by its region attention (a network applied to ``encoded``, or its cached
    output); unchanged without attention."""
    if attention is None:
        return condition
    weights = attention(encoded) if isinstance(attention, nn.Module) else attention
    return condition * weights


@dataclass
class AudioEncoderConfig:
    input_dim: int = 80      # per-step audio feature size (80 log-mel bands, or 40 phones, ...)
    window: int = 16         # steps per video frame window
    out_dim: int = 32
    smoothing_frames: int = 8  # temporal attention window over neighbouring video frames


class AudioEncoder(nn.Module):
    """(T, window, input_dim) audio windows -> (T, out_dim) codes, then temporal attention over
    ``smoothing_frames`` neighbouring frames (ER-NeRF/TalkingGaussian's AudioNet + AudioAttNet)."""

    def __init__(self, config: AudioEncoderConfig) -> None:
        super().__init__()
        self.config = config
        c = config.input_dim
        self.conv = nn.Sequential(
            nn.Conv1d(c, 64, 3, stride=2, padding=1), nn.LeakyReLU(0.02, True),
            nn.Conv1d(64, 64, 3, stride=2, padding=1), nn.LeakyReLU(0.02, True),
            nn.Conv1d(64, 64, 3, stride=2, padding=1), nn.LeakyReLU(0.02, True),
        )
        self.fc = nn.Sequential(nn.Linear(64 * ((config.window + 7) // 8), 64), nn.LeakyReLU(0.02, True),
                                nn.Linear(64, config.out_dim))
        self.attention = temporal_attention(config.out_dim)
        # Per-band statistics of the training audio (set by ``fit_normalisation``, saved with the
        # weights). Raw log-mel sits around -10 with a spread of ~4: unnormalised, the constant part
        # swamps the frame-to-frame variation and the codes barely depend on the audio.
        self.register_buffer("feature_mean", torch.zeros(config.input_dim))
        self.register_buffer("feature_std", torch.ones(config.input_dim))

    @torch.no_grad()
    def fit_normalisation(self, windows: Tensor) -> None:
        """Sets the per-band mean/std from training windows [T, window, input_dim]."""
        flat = windows.reshape(-1, windows.shape[-1])
        self.feature_mean.copy_(flat.mean(0))
        self.feature_std.copy_(flat.std(0).clamp_min(1e-3))

    def encode(self, windows: Tensor) -> Tensor:
        """windows[T, window, input_dim] -> codes[T, out_dim]."""
        windows = (windows - self.feature_mean) / self.feature_std
        x = self.conv(windows.transpose(1, 2))
        return self.fc(x.flatten(1))

    def forward(self, windows: Tensor, frame: int) -> Tensor:
        """The smoothed code of video frame ``frame`` from all frames' windows [T, window, D] -> [out_dim]."""
        idx = temporal_window(frame, windows.shape[0], self.config.smoothing_frames)
        return attention_pool(self.encode(windows[idx]), self.attention)


def temporal_window(frame: int, n_frames: int, size: int) -> Tensor:
    """Indices of the ``size`` frames around ``frame`` (edges repeated): [size] long."""
    half = size // 2
    return torch.arange(frame - half, frame - half + size).clamp(0, n_frames - 1)


def temporal_attention(code_dim: int) -> nn.Sequential:
    """AudioAttNet: per-frame scores over a window of codes [1, code_dim, S] -> [1, 1, S]."""
    return nn.Sequential(nn.Conv1d(code_dim, 16, 3, padding=1), nn.LeakyReLU(0.02, True),
                         nn.Conv1d(16, 1, 3, padding=1))


def attention_pool(codes: Tensor, attention: nn.Module) -> Tensor:
    """Softmax-weighted sum of a window of codes [S, C] -> [C]."""
    weights = torch.softmax(attention(codes.T[None])[0, 0], dim=0)
    return (weights[:, None] * codes).sum(0)


@dataclass
class LipStateEncoderConfig:
    input_dim: int = 1280      # flattened audio window (16 steps x 80 mel bands)
    lip_dims: int = 4          # lip-state coefficients (features.lipstate.LipBasis)
    out_dim: int = 32
    hidden: int = 64
    smoothing_frames: int = 8
    # Add the frame's own state, unpooled, to the attention-pooled code: alone, the pooling learned
    # to average ~4 frames (160 ms), which damps syllable-rate (4-5 Hz) mouth motion (German anchor,
    # short runs: held-out mouth-opening r 0.55 -> 0.66, spread of the opening 0.011 -> 0.020).
    center_skip: bool = True


class LipStateEncoder(nn.Module):
    """Audio windows -> predicted lip state (a fixed ridge map, features.lipstate) -> code.

    The ridge map is fitted in closed form before training and stored as buffers; the small MLP and
    the temporal attention are learned. ``from_states`` runs the same network on given lip states
    (the tracked ones during training), ``forward`` on states predicted from audio.
    """

    def __init__(self, config: LipStateEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("x_mean", torch.zeros(config.input_dim))
        self.register_buffer("x_std", torch.ones(config.input_dim))
        self.register_buffer("weight", torch.zeros(config.input_dim, config.lip_dims))
        self.register_buffer("bias", torch.zeros(config.lip_dims))
        self.mlp = nn.Sequential(nn.Linear(config.lip_dims, config.hidden), nn.LeakyReLU(0.02, True),
                                 nn.Linear(config.hidden, config.out_dim))
        self.attention = temporal_attention(config.out_dim)
        self.center = (nn.Sequential(nn.Linear(config.lip_dims, config.hidden), nn.LeakyReLU(0.02, True),
                                     nn.Linear(config.hidden, config.out_dim)) if config.center_skip else None)

    def _code(self, window_states: Tensor, frame: int, idx: Tensor) -> Tensor:
        code = attention_pool(self.mlp(window_states), self.attention)
        if self.center is not None:
            code = code + self.center(window_states[int(torch.nonzero(idx == frame)[0, 0])])
        return code

    @torch.no_grad()
    def set_map(self, x_mean, x_std, weight, bias) -> None:
        """Installs a fitted audio-to-lips map (arrays shaped like the buffers)."""
        for name, value in (("x_mean", x_mean), ("x_std", x_std), ("weight", weight), ("bias", bias)):
            getattr(self, name).copy_(torch.as_tensor(np.asarray(value), dtype=torch.float32))

    def predict(self, windows: Tensor) -> Tensor:
        """Audio windows [T, ...] -> predicted lip states [T, lip_dims], clamped to the range the
        fields were trained on (features.lipstate.PREDICTED_STATE_LIMIT)."""
        x = windows.reshape(windows.shape[0], -1)
        states = ((x - self.x_mean) / self.x_std) @ self.weight + self.bias
        return states.clamp(-PREDICTED_STATE_LIMIT, PREDICTED_STATE_LIMIT)

    def from_states(self, states: Tensor, frame: int) -> Tensor:
        """The smoothed code of ``frame`` from lip states of all frames [T, lip_dims] -> [out_dim]."""
        idx = temporal_window(frame, states.shape[0], self.config.smoothing_frames)
        return self._code(states[idx], frame, idx)

    def forward(self, windows: Tensor, frame: int) -> Tensor:
        """The smoothed code of ``frame`` from audio windows of all frames [T, ...] -> [out_dim]."""
        idx = temporal_window(frame, windows.shape[0], self.config.smoothing_frames)
        return self._code(self.predict(windows[idx]), frame, idx)
