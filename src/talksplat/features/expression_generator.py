"""Audio -> facial expression coefficients through a VQ-VAE codebook of the subject's own motion
(SyncTalk++ OOD Audio Expression Generator, re-made small for a CPU).

- The VQ-VAE encodes a *snippet* of ``chunk`` frames of expression coefficients (T, E) into one
  latent, quantises it to the nearest of ``codebook`` learnt entries and decodes the snippet. Trained
  on the subject's tracked coefficients with reconstruction + codebook + beta * commitment losses
  (stop-gradients as van den Oord et al.; straight-through gradient to the encoder), so every
  decodable snippet is one of the subject's own motions.
- A small transformer encoder reads per-frame audio features of ``2 * context + 1`` frames around a
  frame and predicts which code the snippet centred there uses (cross-entropy to the code of the
  tracked snippet).
- Generation: every frame j picks its code (argmax) and decodes the snippet centred at j; frame i
  is the mean of the snippets of frames i - chunk//2 .. i + chunk//2 at i (overlap-add), which keeps
  the motion smooth where neighbouring frames pick different codes.
- Blinks: audio says little about when a person blinks, so blink *timing* is drawn, not regressed,
  at the subject's own blink rate (events of its tracked blink signal): every frame gets a number in
  [0, 1) from a hash of its audio window, and a frame starts a blink when its number is the smallest
  within one blink period (1 / rate frames) around it. That gives the rate on average and spaces
  blinks more evenly than an independent draw per frame (which on Obama clip 2 gave 4 to 10 blinks
  in 15 s clips whose expectation is 7), and it stays deterministic: streaming and offline renders
  agree. Identical windows (digital silence) draw equal numbers and start no blink. The blink follows
  the subject's mean tracked blink profile in coefficient units.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F


@dataclass
class ExpressionGeneratorConfig:
    chunk: int = 8              # frames per snippet (one VQ token)
    codebook: int = 32          # entries
    latent: int = 16            # code size
    hidden: int = 64
    context: int = 6            # audio frames either side of a snippet's centre the transformer reads
    heads: int = 2
    layers: int = 2
    batch: int = 32             # snippets per training step
    # Blink events: tracked blink coefficient above this starts an event (features.expression).
    blink_threshold: float = 0.5
    blink_half_width: int = 3   # frames either side of a blink peak in the profile
    # A blink start is decided by the audio windows of up to this many frames after it (no more
    # look-ahead than the codes already need) and blinks are at least this many frames apart.
    blink_ahead: int = 10


class SnippetVQVAE(nn.Module):
    """(B, chunk, E) coefficient snippets <-> (B, latent) codes quantised to a learnt codebook."""

    def __init__(self, cfg: ExpressionGeneratorConfig, dim: int) -> None:
        super().__init__()
        self.cfg, self.dim = cfg, dim
        flat = cfg.chunk * dim
        self.encoder = nn.Sequential(nn.Linear(flat, cfg.hidden), nn.LeakyReLU(0.1), nn.Linear(cfg.hidden, cfg.latent))
        self.decoder = nn.Sequential(nn.Linear(cfg.latent, cfg.hidden), nn.LeakyReLU(0.1), nn.Linear(cfg.hidden, flat))
        self.codebook = nn.Parameter(torch.randn(cfg.codebook, cfg.latent) * 0.1)

    def encode(self, snippets: Tensor) -> Tensor:
        return self.encoder(snippets.flatten(1))

    def nearest(self, latents: Tensor) -> Tensor:
        """Index of the nearest codebook entry of each latent (B,)."""
        return torch.cdist(latents, self.codebook).argmin(-1)

    def decode_codes(self, codes: Tensor) -> Tensor:
        return self.decoder(self.codebook[codes]).view(-1, self.cfg.chunk, self.dim)

    def losses(self, snippets: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """Reconstruction, codebook and commitment terms (unweighted) and the codes of ``snippets``."""
        z = self.encode(snippets)
        codes = self.nearest(z.detach())
        e = self.codebook[codes]
        quantised = z + (e - z).detach()            # straight-through
        recon = self.decoder(quantised).view_as(snippets)
        return {"vq_reconstruction": F.l1_loss(recon, snippets),
                "vq_codebook": F.mse_loss(e, z.detach()),
                "vq_commitment": F.mse_loss(z, e.detach())}, codes


class AudioToCode(nn.Module):
    """(B, 2 * context + 1, A) per-frame audio features -> (B, codebook) logits of the centre's code."""

    def __init__(self, cfg: ExpressionGeneratorConfig, audio_dim: int) -> None:
        super().__init__()
        self.inp = nn.Linear(audio_dim, cfg.hidden)
        self.position = nn.Parameter(torch.zeros(2 * cfg.context + 1, cfg.hidden))
        layer = nn.TransformerEncoderLayer(cfg.hidden, cfg.heads, 2 * cfg.hidden, dropout=0.0, batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.out = nn.Linear(cfg.hidden, cfg.codebook)

    def forward(self, audio: Tensor) -> Tensor:
        x = self.transformer(self.inp(audio) + self.position)
        return self.out(x[:, audio.shape[1] // 2])


class ExpressionGenerator(nn.Module):
    """The VQ-VAE, the audio-to-code transformer, the subject's coefficient range and blink model."""

    def __init__(self, cfg: ExpressionGeneratorConfig, expression_dim: int, audio_dim: int,
                 blink_columns: tuple[int, ...]) -> None:
        super().__init__()
        self.cfg, self.blink_columns = cfg, tuple(blink_columns)
        self.vq = SnippetVQVAE(cfg, expression_dim)
        self.audio_to_code = AudioToCode(cfg, audio_dim)
        self.register_buffer("low", torch.zeros(expression_dim))
        self.register_buffer("high", torch.ones(expression_dim))
        self.register_buffer("audio_mean", torch.zeros(audio_dim))
        self.register_buffer("audio_std", torch.ones(audio_dim))
        self.register_buffer("blink_rate", torch.zeros(()))            # blink starts per frame
        self.register_buffer("blink_profile", torch.zeros(2 * cfg.blink_half_width + 1))

    @property
    def reach(self) -> int:
        """Frames either side of a frame whose audio features its generated expression reads."""
        return self.cfg.chunk // 2 + self.cfg.context

    def blink_window(self) -> tuple[int, int]:
        """(behind, ahead): a frame starts a blink when its seed is the smallest from ``behind``
        frames before it to ``ahead`` after it: one blink period, 1 / blink_rate frames, in all."""
        rate = float(self.blink_rate)
        if rate <= 0:
            return 0, 0
        period = max(1, round(1.0 / rate))
        ahead = min(self.cfg.blink_ahead, (period - 1) // 2)
        return period - 1 - ahead, ahead

    @property
    def blink_reach(self) -> tuple[int, int]:
        """Frames (behind, ahead) of a frame whose seeds decide its blink."""
        behind, ahead = self.blink_window()
        return behind + self.blink_profile.shape[0] - 1, ahead

    # ------------------------------------------------------------------------------------- fitting
    @torch.no_grad()
    def fit_statistics(self, expressions: Tensor, audio: Tensor, frames: np.ndarray,
                       blink_signal: np.ndarray | None = None) -> dict:
        """The subject's coefficient range, audio feature statistics and blink model, from the
        training ``frames`` of tracked ``expressions`` (T, E) and per-frame ``audio`` (T, A).

        Blink events are the runs of ``blink_signal`` (T,) (e.g. prepare's eye-aspect-ratio blink in
        [0, 1]) above ``blink_threshold``, or of the blink coefficients themselves when None: a head
        model's blink coefficients may never reach the threshold (German anchor: 99th percentile
        0.18) although the eyes close. The profile is always in the coefficients' own units."""
        ex, au = expressions[torch.as_tensor(frames)], audio[torch.as_tensor(frames)]
        self.low.copy_(ex.min(0).values)
        self.high.copy_(ex.max(0).values)
        self.audio_mean.copy_(au.mean(0))
        self.audio_std.copy_(au.std(0).clamp_min(1e-4))
        blink = ex[:, list(self.blink_columns)].mean(1).numpy() if self.blink_columns else np.zeros(len(ex))
        events = blink if blink_signal is None else np.asarray(blink_signal, dtype=np.float64)[np.asarray(frames)]
        peaks = blink_peaks(events, self.cfg.blink_threshold) if self.blink_columns else np.zeros(0, int)
        self.blink_rate.fill_(len(peaks) / max(len(blink), 1))
        self.blink_profile.copy_(torch.from_numpy(blink_profile(blink, peaks, self.cfg.blink_half_width)))
        return {"blinks_in_training": len(peaks), "blink_rate_per_minute": round(float(self.blink_rate) * 1500, 2)}

    def losses(self, expressions: Tensor, audio: Tensor, centres: np.ndarray) -> dict[str, Tensor]:
        """VQ-VAE terms on the snippets centred at ``centres`` and the audio-to-code cross-entropy."""
        snippets = expressions[snippet_indices(centres, self.cfg.chunk, len(expressions))]
        terms, codes = self.vq.losses(snippets)
        windows = self.normalised(audio)[context_indices(centres, self.cfg.context, len(audio))]
        terms["code_prediction"] = F.cross_entropy(self.audio_to_code(windows), codes)
        return terms

    def normalised(self, audio: Tensor) -> Tensor:
        return (audio - self.audio_mean) / self.audio_std

    # ------------------------------------------------------------------------------------- generating
    @torch.no_grad()
    def generate(self, audio: Tensor, index: int, seeds: np.ndarray | None = None,
                 keys: Sequence[Hashable] | None = None, code_memo: Memo | None = None) -> Tensor:
        """Expression coefficients (E,) of frame ``index`` from per-frame audio features ``audio``
        (T, A) of the frames around it; ``seeds`` (T,) in [0, 1) decide blink starts (none if None).
        With ``keys`` (T,) naming each frame's audio window and a ``code_memo``, a snippet's code is
        computed once per audio context (one at a time, so the result never depends on which frames
        were computed together) and reused by the next frames: rendering a frame then runs the
        transformer once instead of ``chunk + 1`` times."""
        if code_memo is not None and keys is None:
            raise ValueError("a code memo needs the keys of the audio windows")
        n, half = audio.shape[0], self.cfg.chunk // 2
        neighbours = np.clip(np.arange(index - half, index + half + 1), 0, n - 1)
        contexts = context_indices(neighbours, self.cfg.context, n)
        if code_memo is None:
            codes = self.audio_to_code(self.normalised(audio)[contexts]).argmax(-1)
        else:
            codes = torch.stack([code_memo.get(tuple(keys[k] for k in row.tolist()),
                                           lambda row=row: self.audio_to_code(self.normalised(audio)[row][None])[0].argmax())
                                 for row in contexts])
        snippets = self.vq.decode_codes(codes)                       # (2 half + 1, chunk, E)
        # Snippet k is centred at frame neighbours[k]; frame ``index`` is its row half + (index - j).
        rows = half + (index - np.arange(index - half, index + half + 1))
        valid = (rows >= 0) & (rows < self.cfg.chunk)
        expression = snippets[np.flatnonzero(valid), rows[valid]].mean(0)
        if seeds is not None and self.blink_columns:
            expression = self._with_blink(expression, seeds, index)
        return torch.maximum(torch.minimum(expression, self.high), self.low)

    def _with_blink(self, expression: Tensor, seeds: np.ndarray, index: int) -> Tensor:
        """Adds the blink profile of every blink started within its reach of frame ``index``."""
        width = self.blink_profile.shape[0]
        behind, ahead = self.blink_window()
        amount = 0.0
        if float(self.blink_rate) > 0:
            for start in range(max(0, index - width + 1), min(index, len(seeds) - 1) + 1):
                if starts_blink(seeds, start, behind, ahead):
                    amount = max(amount, float(self.blink_profile[index - start]))
        out = expression.clone()
        cols = list(self.blink_columns)
        out[cols] = torch.maximum(out[cols], out.new_tensor(amount))
        return out


# ----------------------------------------------------------------------------------------- helpers
def snippet_indices(centres: np.ndarray, chunk: int, n: int) -> Tensor:
    """(B, chunk) frame indices of snippets centred at ``centres`` (edges repeated)."""
    offsets = np.arange(chunk) - chunk // 2
    return torch.from_numpy(np.clip(np.asarray(centres)[:, None] + offsets, 0, n - 1))


def context_indices(centres: np.ndarray, context: int, n: int) -> Tensor:
    """(B, 2 context + 1) frame indices around ``centres`` (edges repeated)."""
    offsets = np.arange(-context, context + 1)
    return torch.from_numpy(np.clip(np.asarray(centres)[:, None] + offsets, 0, n - 1))


def blink_peaks(blink: np.ndarray, threshold: float) -> np.ndarray:
    """Frame of the peak of each run of ``blink`` above ``threshold``."""
    above = np.concatenate([[False], blink > threshold, [False]])
    starts, stops = np.flatnonzero(~above[:-1] & above[1:]), np.flatnonzero(above[:-1] & ~above[1:])
    return np.array([s + int(np.argmax(blink[s:e])) for s, e in zip(starts, stops, strict=True)], dtype=int)


def blink_profile(blink: np.ndarray, peaks: np.ndarray, half_width: int) -> np.ndarray:
    """Mean blink coefficient around the peaks (2 half_width + 1,), float32; zeros without blinks.
    The profile starts at the event's first frame (index 0 = peak - half_width)."""
    rows = [blink[p - half_width:p + half_width + 1] for p in peaks
            if p - half_width >= 0 and p + half_width < len(blink)]
    if not rows:
        return np.zeros(2 * half_width + 1, np.float32)
    return np.mean(rows, axis=0).astype(np.float32)


class Memo:
    """A bounded memo (least recently used entries dropped): ``get(key, make)`` returns the value
    stored under ``key``, or stores and returns ``make()``."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = self._items[key] = make()
        if len(self._items) > self.size:
            self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)


def starts_blink(seeds: np.ndarray, frame: int, behind: int, ahead: int) -> bool:
    """Whether ``frame`` starts a blink: its seed is below those of the ``behind`` frames before it
    and not above those of the ``ahead`` frames after it. ``seeds`` (T,) are the clip's frames around
    ``frame``; positions before or after them (beyond the clip's edges) take pseudo-random seeds
    made from the edge frame's seed and the distance, so the first and last frames of a clip blink
    no more often than the others, and still deterministically."""
    n = len(seeds)

    def seed(k: int) -> float:
        if k < 0:
            return window_seed(torch.tensor([seeds[0]]), salt=k)
        if k >= n:
            return window_seed(torch.tensor([seeds[-1]]), salt=k - n + 1)
        return float(seeds[k])

    own = float(seeds[frame])
    return (all(own < seed(k) for k in range(frame - behind, frame))
            and all(own <= seed(k) for k in range(frame + 1, frame + ahead + 1)))


def window_seed(window: Tensor, salt: int = 0) -> float:
    """A number in [0, 1) fixed by an audio window's values (and ``salt``): the same window always
    draws the same, so streamed and offline renders agree. (Identical windows, e.g. digital
    silence, draw the same number.)"""
    digest = hashlib.blake2b(window.numpy().tobytes() + int(salt).to_bytes(8, "little", signed=True),
                             digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0 ** 64
