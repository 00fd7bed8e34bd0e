"""The audio-visual sync encoder (SyncTalk++ Face-Sync Controller, Sec. III-B, eqs. 1-3), on CPU.

Two encoders map a 5-frame window of lip shapes (visual) and the 16-step log-mel window of the
same centre frame (audio) to unit vectors; their cosine similarity says whether they belong
together. Trained jointly with

- the paper's sync loss (eqs. 1-2): BCE on P_sync = (1 + cos) / 2 for aligned pairs (y = 1) and
  pairs whose audio is shifted by 3..15 frames (y = 0);
- a softmax over all 31 shifts -15..+15 of each visual window (InfoNCE with temperature): plain
  cosine-BCE alone stayed at chance in CPU trials, while a loss shaped like the offset search
  (which shift is the right one?) learned in minutes;
- the reconstruction branch (eq. 3): decode the lip shape of the centre frame from the audio
  embedding plus the embedding of a reference frame of the same subject, L1.

Lip *landmark shapes* replace the paper's lower-face crops: they are what face tracking already
gives, carry no identity or lighting, and trained far faster on a CPU. After training the audio
branch is a feature extractor (T, D), and the model scores lip sync (offset + confidence).

Its scores are talksplat's own ("AV offset" / "AV confidence" of this encoder), not the
SyncNet-based Sync-C / LSE-C of the papers, which need SyncNet weights no package ships.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from talksplat.core.landmarks import LIP_POINTS
from talksplat.errors import TalksplatError, UsageError
from talksplat.features.audio import FPS, MEL_BANDS, WINDOW_STEPS, fit_to_frames, load_audio_16k, mel_windows
from talksplat.features.sync_offset import MAX_SHIFT, normalise_lip_shapes
from talksplat.io.paths import require_file

LIP_INDICES = LIP_POINTS                       # the 40 MediaPipe lip points, in this order
VISUAL_WINDOW = 5                              # frames of lips per visual input (SyncTalk++: 5)
SHIFTS = np.arange(-MAX_SHIFT, MAX_SHIFT + 1)  # candidate offsets, frames
MIN_NEGATIVE_SHIFT = 3                         # shifts this far off count as "not in sync" for BCE
CONFIG_NAME, WEIGHTS_NAME = "sync_encoder.json", "sync_encoder.safetensors"
FORMAT = "talksplat-sync-encoder/1"


# ----------------------------------------------------------------------------------------------------
# Inputs


def lip_points(landmarks: np.ndarray) -> np.ndarray:
    """Lip landmarks (T, 40, 2) from full FaceMesh landmarks (T, 468|478, 2|3) or lips already (T, K, 2)."""
    landmarks = np.asarray(landmarks, dtype=np.float32)
    if landmarks.ndim != 3 or landmarks.shape[2] < 2:
        raise UsageError(f"landmarks must be (T, K, 2), got shape {landmarks.shape}")
    if landmarks.shape[1] >= 468:
        landmarks = landmarks[:, list(LIP_INDICES)]
    return landmarks[:, :, :2]


def standardise(x: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Per-clip zero mean and unit variance per feature, (T, ...) -> same shape float32.

    Done per clip so that speakers, microphones and face sizes become comparable; nothing about
    a clip is stored in the model."""
    ref = x if valid is None else x[valid]
    axes = tuple(range(ref.ndim - 1))
    mean = ref.mean(axis=axes, keepdims=True)
    std = ref.std(axis=axes, keepdims=True).mean() + 1e-6    # one scale: keeps relative band energies
    return ((x - mean) / std).astype(np.float32)


@dataclass
class SyncClip:
    """One subject's clip ready for the sync encoder (25 fps).

    lips: (T, 2K) standardised lip shapes; mel: (T, 16, 80) standardised log-mel windows;
    valid: (T,) frames whose lips were tracked.
    """

    name: str
    lips: np.ndarray
    mel: np.ndarray
    valid: np.ndarray

    @property
    def num_frames(self) -> int:
        return len(self.lips)

    def slice(self, start: int, stop: int) -> SyncClip:
        return SyncClip(self.name, self.lips[start:stop], self.mel[start:stop], self.valid[start:stop])


def make_clip(landmarks: np.ndarray, audio: np.ndarray, name: str = "clip") -> SyncClip:
    """Build a :class:`SyncClip` from lip/face landmarks (T, K, 2) and 16 kHz mono audio (N,)."""
    shapes, valid = normalise_lip_shapes(lip_points(landmarks))
    n = len(shapes)
    mel = mel_windows(fit_to_frames(np.asarray(audio, np.float32).reshape(-1), n), n)
    return SyncClip(name, standardise(shapes, valid), standardise(mel), valid)


def clip_from_files(landmarks_path: str | Path, audio_path: str | Path, name: str | None = None) -> SyncClip:
    """A clip from a landmarks ``.npy`` ((T, 478, 2|3) FaceMesh pixels or (T, 40, 2) lips, 25 fps)
    and an audio/video file (its audio track)."""
    landmarks_path = require_file(landmarks_path, "landmarks (.npy)")
    landmarks = np.load(landmarks_path, allow_pickle=False)
    return make_clip(landmarks, load_audio_16k(audio_path), name or landmarks_path.stem)


def track_video_lips(video_path: str | Path, fps: float = FPS, progress: bool = True) -> np.ndarray:
    """FaceMesh lip landmarks of a video resampled to ``fps`` (nearest frame), (T, 40, 2), NaN where
    no face was found."""
    from tqdm import tqdm

    from talksplat.io.video import iter_frames, probe_video
    from talksplat.tracking.facemesh import FaceMeshTracker

    info = probe_video(video_path)
    lips: list[np.ndarray] = []
    next_time = 0.0
    with FaceMeshTracker() as tracker:
        bar = tqdm(total=int(info.duration * fps) or None, desc=f"tracking {Path(video_path).name}",
                   disable=not progress, unit="frame")
        for t, frame in iter_frames(video_path):
            # keep the source frame nearest to each 25 fps time (half a source frame tolerance)
            if t + 0.5 / max(info.fps, fps) < next_time:
                continue
            landmarks = tracker.process(frame)
            while next_time <= t + 0.5 / max(info.fps, fps):
                lips.append(landmarks[list(LIP_INDICES), :2] if landmarks is not None
                            else np.full((len(LIP_INDICES), 2), np.nan, np.float32))
                next_time = len(lips) / fps
                bar.update(1)
        bar.close()
    if not lips:
        raise UsageError(f"{video_path} contains no decodable video frames")
    return np.stack(lips).astype(np.float32)


def clip_from_video(video_path: str | Path, progress: bool = True) -> SyncClip:
    """A clip from a talking-head video with audio (tracks the lips with FaceMesh at 25 fps)."""
    lips = track_video_lips(video_path, progress=progress)
    return make_clip(lips, load_audio_16k(video_path), Path(video_path).stem)


PREPARED_LANDMARKS = ("landmarks.npy", "tracking/landmarks_source.npy")   # (T, 478, 3) pixels, 25 fps
PREPARED_DETECTED = "tracking/detected.npy"                                # (T,) bool, False = filled in
PREPARED_AUDIO = ("audio/audio.wav", "media/audio.wav")                     # offset-corrected first


def prepared_lips_audio(subject_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Adapter for a ``talksplat prepare`` subject folder (layout: talksplat/prepare/layout.py).

    Reads ``landmarks.npy`` (or ``tracking/landmarks_source.npy``), marks frames that
    ``tracking/detected.npy`` says were filled in as missing (NaN), and the offset-corrected
    ``audio/audio.wav`` (or ``media/audio.wav``).

    Returns:
        lips (T, 40, 2) float32 pixels, audio (N,) float32 16 kHz.
    """
    subject_dir = Path(subject_dir)
    landmarks = next((subject_dir / p for p in PREPARED_LANDMARKS if (subject_dir / p).is_file()), None)
    audio = next((subject_dir / p for p in PREPARED_AUDIO if (subject_dir / p).is_file()), None)
    if landmarks is None or audio is None:
        raise UsageError(f"{subject_dir} is not a prepared subject (needs landmarks.npy and audio/audio.wav); "
                         "run talksplat prepare first, or pass --video")
    lips = lip_points(np.load(landmarks, allow_pickle=False)).copy()
    detected_path = subject_dir / PREPARED_DETECTED
    if detected_path.is_file():
        detected = np.load(detected_path, allow_pickle=False).astype(bool)
        if detected.shape == (len(lips),):
            lips[~detected] = np.nan
    return lips, load_audio_16k(audio)


def clip_from_prepared(subject_dir: str | Path) -> SyncClip:
    """A :class:`SyncClip` of a prepared subject (see :func:`prepared_lips_audio`)."""
    lips, audio = prepared_lips_audio(subject_dir)
    return make_clip(lips, audio, Path(subject_dir).name)


# ----------------------------------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class SyncEncoderConfig:
    """Architecture (saved with the weights)."""

    lip_points: int = len(LIP_INDICES)
    mel_bands: int = MEL_BANDS
    mel_steps: int = WINDOW_STEPS
    visual_window: int = VISUAL_WINDOW
    embed_dim: int = 64
    hidden: int = 128

    def validate(self) -> None:
        if self.mel_bands != MEL_BANDS or self.mel_steps != WINDOW_STEPS:
            raise TalksplatError(f"sync encoder expects {self.mel_steps}x{self.mel_bands} log-mel windows; "
                                 f"this talksplat computes {WINDOW_STEPS}x{MEL_BANDS}")
        if min(self.lip_points, self.embed_dim, self.hidden, self.visual_window) <= 0:
            raise TalksplatError("sync encoder config has a non-positive size")


class AudioEncoder(nn.Module):
    """(B, 16, 80) log-mel window -> (B, D) unit vector. 1D convs over time, bands as channels."""

    def __init__(self, cfg: SyncEncoderConfig) -> None:
        super().__init__()
        h = cfg.hidden
        self.net = nn.Sequential(
            nn.Conv1d(cfg.mel_bands, h, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv1d(h, h, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv1d(h, h, 3, stride=2, padding=1), nn.LeakyReLU(0.2))
        self.head = nn.Linear(h * math.ceil(cfg.mel_steps / 4), cfg.embed_dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.net(mel.transpose(1, 2))
        return F.normalize(self.head(x.flatten(1)), dim=-1)


class VisualEncoder(nn.Module):
    """(B, 5, 2K) lip shapes of 5 frames -> (B, D) unit vector."""

    def __init__(self, cfg: SyncEncoderConfig) -> None:
        super().__init__()
        h = 2 * cfg.hidden
        self.net = nn.Sequential(
            nn.Linear(cfg.visual_window * 2 * cfg.lip_points, h), nn.LeakyReLU(0.2),
            nn.Linear(h, h), nn.LeakyReLU(0.2), nn.Linear(h, cfg.embed_dim))

    def forward(self, lips: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(lips.flatten(1)), dim=-1)


class LipDecoder(nn.Module):
    """Reconstruction branch: (audio embedding, reference-frame embedding) -> (B, 2K) centre lip shape."""

    def __init__(self, cfg: SyncEncoderConfig) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * cfg.embed_dim, 2 * cfg.hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(2 * cfg.hidden, 2 * cfg.lip_points))

    def forward(self, audio_embedding: torch.Tensor, reference_embedding: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([audio_embedding, reference_embedding], dim=-1))


class SyncEncoder(nn.Module):
    """Audio + visual encoders and the lip decoder; ``logit_scale`` is the learnt 1 / temperature."""

    def __init__(self, cfg: SyncEncoderConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.audio = AudioEncoder(cfg)
        self.visual = VisualEncoder(cfg)
        self.decoder = LipDecoder(cfg)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))


def save_sync_encoder(model: SyncEncoder, out_dir: str | Path, extra: dict[str, object] | None = None) -> Path:
    """Write ``sync_encoder.safetensors`` + ``sync_encoder.json`` (config, format, training info)."""
    from safetensors.torch import save_file

    from talksplat.io.atomic import atomic_path, write_bytes_atomic

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out_dir / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp))
    meta = {"format": FORMAT, "config": dataclasses.asdict(model.cfg), **(extra or {})}
    write_bytes_atomic(out_dir / CONFIG_NAME, (json.dumps(meta, indent=1, default=str) + "\n").encode())
    return out_dir


def load_sync_encoder(model_dir: str | Path) -> tuple[SyncEncoder, dict[str, object]]:
    """Load and validate a saved sync encoder; returns (model in eval mode, its JSON metadata)."""
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    config_path, weights_path = model_dir / CONFIG_NAME, model_dir / WEIGHTS_NAME
    if not (config_path.is_file() and weights_path.is_file()):
        raise UsageError(f"{model_dir} has no sync encoder ({CONFIG_NAME} + {WEIGHTS_NAME}); "
                         "train one with talksplat sync-train")
    try:
        meta = json.loads(config_path.read_text())
        cfg = SyncEncoderConfig(**meta["config"])
    except (ValueError, KeyError, TypeError) as exc:
        raise TalksplatError(f"{config_path} is not a valid sync encoder config ({exc}); retrain it") from exc
    if meta.get("format") != FORMAT:
        raise TalksplatError(f"{config_path} has format {meta.get('format')!r}, expected {FORMAT!r}; retrain it")
    model = SyncEncoder(cfg)
    try:
        model.load_state_dict(load_file(str(weights_path)), strict=True)
    except (RuntimeError, OSError) as exc:
        raise TalksplatError(f"{weights_path} does not match its config ({str(exc).splitlines()[0]}); "
                             "retrain it") from exc
    return model.eval(), meta


# ----------------------------------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class SyncTrainConfig:
    """How :func:`train_sync_encoder` trains (saved beside the weights)."""

    model: SyncEncoderConfig = SyncEncoderConfig()
    minutes: float = 3.0              # wall-clock budget; training stops at this or ``max_steps``
    max_steps: int = 3000
    chunks_per_step: int = 4          # each chunk = ``chunk_frames`` consecutive visual windows
    chunk_frames: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    shift_softmax_weight: float = 1.0  # InfoNCE over the 31 shifts
    sync_bce_weight: float = 0.5       # SyncTalk++ eq. 2 (aligned vs shifted pairs)
    reconstruction_weight: float = 0.2 # SyncTalk++ eq. 3 (L1 on the centre lip shape)
    lip_noise: float = 0.05            # augmentation: Gaussian noise on standardised lip shapes
    lip_scale_jitter: float = 0.1      # augmentation: random global scale of lip motion
    freq_mask_bands: int = 8           # augmentation: zero up to this many adjacent mel bands
    mel_noise: float = 0.1             # augmentation: noise on standardised log-mel
    threads: int = 1
    seed: int = 0

    def validate(self) -> None:
        self.model.validate()
        if self.minutes <= 0 or self.max_steps <= 0 or self.chunks_per_step <= 0 or self.chunk_frames <= 0:
            raise UsageError("sync training needs positive minutes, steps, chunks and chunk frames")

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclass
class SyncTrainResult:
    model: SyncEncoder
    out_dir: Path | None
    steps: int
    seconds: float
    final_loss: float
    shift_accuracy: float      # training-batch fraction of windows whose best shift was 0


def _chunk_starts(clip: SyncClip, needed: int) -> int:
    """Number of valid chunk start positions (visual windows plus +-15 frames of audio)."""
    return clip.num_frames - needed - 2 * MAX_SHIFT - (VISUAL_WINDOW - 1) + 1


def _sample_batch(clips: list[SyncClip], cfg: SyncTrainConfig, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random chunks: lips (C, L, 5, 2K), mel (C, L + 30, 16, 80), target lips (C, L, 2K),
    reference lips (C, L, 5, 2K) from random frames of the same clip."""
    length, half = cfg.chunk_frames, VISUAL_WINDOW // 2
    usable = [c for c in clips if _chunk_starts(c, length) > 0]
    lips, mels, targets, refs = [], [], [], []
    for _ in range(cfg.chunks_per_step):
        clip = usable[rng.integers(len(usable))]
        start = MAX_SHIFT + half + int(rng.integers(_chunk_starts(clip, length)))   # first centre frame
        centres = np.arange(start, start + length)
        window = centres[:, None] + np.arange(-half, half + 1)[None, :]
        lips.append(clip.lips[window])
        mels.append(clip.mel[start - MAX_SHIFT:start + length + MAX_SHIFT])
        targets.append(clip.lips[centres])
        ref_centres = rng.integers(half, clip.num_frames - half, size=length)
        refs.append(clip.lips[ref_centres[:, None] + np.arange(-half, half + 1)[None, :]])
    return np.stack(lips), np.stack(mels), np.stack(targets), np.stack(refs)


def _augment(lips: torch.Tensor, mel: torch.Tensor, cfg: SyncTrainConfig, gen: torch.Generator
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Lip noise and scale jitter; mel noise and a random frequency mask per chunk."""
    scale = 1.0 + cfg.lip_scale_jitter * (2 * torch.rand(lips.shape[0], 1, 1, 1, generator=gen) - 1)
    lips = lips * scale + cfg.lip_noise * torch.randn(lips.shape, generator=gen)
    mel = mel + cfg.mel_noise * torch.randn(mel.shape, generator=gen)
    if cfg.freq_mask_bands > 0:
        width = torch.randint(0, cfg.freq_mask_bands + 1, (mel.shape[0],), generator=gen)
        first = torch.randint(0, mel.shape[-1] - cfg.freq_mask_bands, (mel.shape[0],), generator=gen)
        bands = torch.arange(mel.shape[-1])
        mask = (bands[None] >= first[:, None]) & (bands[None] < (first + width)[:, None])
        mel = mel.masked_fill(mask[:, None, None, :], 0.0)
    return lips, mel


def shift_similarities(visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each visual embedding with the audio at every shift.

    Args:
        visual: (C, L, D); audio: (C, L + 30, D), audio row i + 15 aligned with visual row i.
    Returns:
        (C, L, 31): [..., j] = similarity with the audio shifted by j - 15 frames.
    """
    length = visual.shape[1]
    windows = audio.unfold(1, 2 * MAX_SHIFT + 1, 1)[:, :length]    # (C, L, D, 31)
    return torch.einsum("cld,clds->cls", visual, windows)


def sync_losses(model: SyncEncoder, lips: torch.Tensor, mel: torch.Tensor, targets: torch.Tensor,
                refs: torch.Tensor, cfg: SyncTrainConfig, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """The three losses on one batch (see the module docstring); shapes as in :func:`_sample_batch`."""
    chunks, length = lips.shape[:2]
    visual = model.visual(lips.flatten(0, 1)).view(chunks, length, -1)
    audio_all = model.audio(mel.flatten(0, 1)).view(chunks, length + 2 * MAX_SHIFT, -1)
    sims = shift_similarities(visual, audio_all)                       # (C, L, 31)
    centre = torch.full((chunks * length,), MAX_SHIFT, dtype=torch.long)
    shift_ce = F.cross_entropy(model.logit_scale.exp().clamp(max=100) * sims.flatten(0, 1), centre)
    # eq. 2: aligned pairs (y = 1) and one random clearly-shifted pair per window (y = 0)
    far = torch.tensor([j for j, s in enumerate(SHIFTS) if abs(s) >= MIN_NEGATIVE_SHIFT])
    pick = far[torch.randint(len(far), (chunks, length, 1), generator=gen)]
    p_pos = ((1 + sims[..., MAX_SHIFT]) / 2).clamp(1e-4, 1 - 1e-4)
    p_neg = ((1 + sims.gather(-1, pick).squeeze(-1)) / 2).clamp(1e-4, 1 - 1e-4)
    bce = -(torch.log(p_pos).mean() + torch.log(1 - p_neg).mean()) / 2
    # eq. 3: lips of the centre frame from its audio + a reference frame of the same subject
    aligned_audio = audio_all[:, MAX_SHIFT:MAX_SHIFT + length]
    reference = model.visual(refs.flatten(0, 1)).view(chunks, length, -1)
    recon = F.l1_loss(model.decoder(aligned_audio, reference), targets)
    total = cfg.shift_softmax_weight * shift_ce + cfg.sync_bce_weight * bce + cfg.reconstruction_weight * recon
    accuracy = (sims.argmax(-1) == MAX_SHIFT).float().mean()
    return {"total": total, "shift_ce": shift_ce, "bce": bce, "recon": recon, "accuracy": accuracy}


def train_sync_encoder(clips: list[SyncClip], cfg: SyncTrainConfig = SyncTrainConfig(),
                       out_dir: str | Path | None = None, progress: bool = True) -> SyncTrainResult:
    """Train the sync encoder self-supervised on one or several subjects' clips.

    Args:
        clips: from :func:`make_clip` / :func:`clip_from_video` / :func:`clip_from_prepared`; each
            at least ~3 s (chunks need 32 frames plus +-15 frames of audio). Correct a known
            audio-video offset first (:func:`talksplat.features.sync.estimate_offset`): the model
            learns each clip's alignment as "in sync".
        out_dir: if given, the model is saved there (safetensors + JSON incl. ``cfg``).
    """
    from tqdm import tqdm

    cfg.validate()
    if not clips:
        raise UsageError("no clips to train the sync encoder on")
    if not any(_chunk_starts(c, cfg.chunk_frames) > 0 for c in clips):
        need = (cfg.chunk_frames + 2 * MAX_SHIFT + VISUAL_WINDOW) / FPS
        raise UsageError(f"every clip is too short for sync training (need > {need:.1f} s of video)")
    if any(c.lips.shape[1] != 2 * cfg.model.lip_points for c in clips):
        raise TalksplatError(f"clips must have {cfg.model.lip_points} lip points per frame")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = SyncEncoder(cfg.model)
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    start, step, smoothed, accuracy = time.perf_counter(), 0, float("nan"), float("nan")
    bar = tqdm(total=cfg.max_steps, desc="sync encoder", disable=not progress, unit="step")
    while step < cfg.max_steps and time.perf_counter() - start < 60.0 * cfg.minutes:
        lips, mel, targets, refs = (torch.from_numpy(a) for a in _sample_batch(clips, cfg, rng))
        lips, mel = _augment(lips, mel, cfg, gen)
        losses = sync_losses(model, lips, mel, targets, refs, cfg, gen)
        optimiser.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimiser.step()
        step += 1
        value = float(losses["total"].detach())
        smoothed = value if math.isnan(smoothed) else 0.98 * smoothed + 0.02 * value
        acc = float(losses["accuracy"])
        accuracy = acc if math.isnan(accuracy) else 0.98 * accuracy + 0.02 * acc
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{smoothed:.3f}", shift_acc=f"{accuracy:.2f}")
    bar.close()
    seconds = time.perf_counter() - start
    model.eval()
    if out_dir is not None:
        info = {"train": cfg.to_json(), "steps": step, "seconds": round(seconds, 1),
                "clips": [{"name": c.name, "frames": c.num_frames} for c in clips],
                "final_loss": smoothed, "train_shift_accuracy": accuracy}
        save_sync_encoder(model, out_dir, info)
    return SyncTrainResult(model, Path(out_dir) if out_dir is not None else None, step, seconds, smoothed, accuracy)


# ----------------------------------------------------------------------------------------------------
# Using a trained model: features and lip-sync scores


@torch.no_grad()
def embed_clip(model: SyncEncoder, clip: SyncClip) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame embeddings: visual (T, D) (edge frames use repeated neighbours) and audio (T, D)."""
    half = VISUAL_WINDOW // 2
    index = np.clip(np.arange(clip.num_frames)[:, None] + np.arange(-half, half + 1)[None, :],
                    0, clip.num_frames - 1)
    visual = model.visual(torch.from_numpy(clip.lips[index])).numpy()
    audio = model.audio(torch.from_numpy(clip.mel)).numpy()
    return visual, audio


def pooled_shift_scores(visual: np.ndarray, audio: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Mean cosine similarity over ``frames`` of visual[t] with audio[t + s], s = -15..15.

    Frames whose shifted audio falls outside the clip are left out of that shift's mean.

    Returns:
        (31,) float
    """
    out = np.empty(len(SHIFTS))
    for i, s in enumerate(SHIFTS):
        f = frames[(frames + s >= 0) & (frames + s < len(audio))]
        out[i] = float(np.mean(np.sum(visual[f] * audio[f + s], axis=1))) if len(f) else -1.0
    return out


@dataclass(frozen=True)
class LipSyncScore:
    """talksplat's own lip-sync score from a sync encoder (not SyncNet's Sync-C/LSE-C).

    offset_frames: shift with the highest pooled similarity (> 0 = audio lags video);
    confidence: that similarity minus the median over shifts; similarity: the value at shift 0.
    """

    offset_frames: int
    confidence: float
    similarity: float
    scores: np.ndarray = dataclasses.field(repr=False)


def lip_sync_score(model: SyncEncoder, clip: SyncClip, frames: np.ndarray | None = None) -> LipSyncScore:
    """Score lip sync of ``clip`` (over ``frames``, default all tracked frames) with a trained encoder."""
    visual, audio = embed_clip(model, clip)
    frames = np.flatnonzero(clip.valid) if frames is None else np.asarray(frames)
    scores = pooled_shift_scores(visual, audio, frames)
    best = int(np.argmax(scores))
    return LipSyncScore(int(SHIFTS[best]), float(scores[best] - np.median(scores)),
                        float(scores[MAX_SHIFT]), scores)


class SyncFeatureExtractor:
    """The audio branch of a trained sync encoder as an audio feature: (T, 16, 80) mel -> (T, D)."""

    def __init__(self, model: SyncEncoder, fingerprint: str) -> None:
        self.model = model
        self.fingerprint = fingerprint

    @classmethod
    def load(cls, model_dir: str | Path | None) -> SyncFeatureExtractor:
        if model_dir is None:
            raise UsageError("the 'avsync' feature needs a trained sync encoder: write avsync:MODEL_DIR "
                             "(train one with talksplat sync-train)")
        model, _ = load_sync_encoder(model_dir)
        digest = hashlib.sha256(Path(model_dir, WEIGHTS_NAME).read_bytes()).hexdigest()[:16]
        return cls(model, digest)

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return (self.model.cfg.embed_dim,)

    @torch.no_grad()
    def compute(self, samples: np.ndarray, n_frames: int) -> np.ndarray:
        """(n_frames, D) float32 audio embeddings of 16 kHz mono ``samples`` fitted to the frames."""
        mel = standardise(mel_windows(samples, n_frames))
        return self.model.audio(torch.from_numpy(mel)).numpy().astype(np.float32)
