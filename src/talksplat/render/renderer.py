"""Driving a trained avatar with new audio: the ``Renderer`` object and ``render_video``.

Pipeline per output frame: audio features -> audio code (with temporal attention) -> deformation
of both branches -> rasterize -> fuse -> composite over the backdrop (plate + torso/neck of the
matching source frame) -> paste back into the source frame at full resolution with a feathered
mask -> H.264 with the driving audio muxed (written atomically).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from talksplat.errors import TalksplatError

PoseSource = Literal["loop", "still"]
ExpressionSource = Literal["video", "neutral"]
FEATHER_SIGMA_FRACTION = 0.02  # paste-back mask blur, as a fraction of the crop side
MAX_AUDIO_SECONDS = 600.0


@dataclass
class RenderOptions:
    pose: PoseSource = "loop"          # ping-pong over the training frames' poses, or hold frame 0
    expression: ExpressionSource = "video"
    full_frame: bool = False           # paste back into the original frames instead of the crop


def pingpong(i: int, frames: np.ndarray) -> int:
    """Index of output frame i when looping ``frames`` forwards then backwards (no jump cuts)."""
    n = len(frames)
    if n == 1:
        return int(frames[0])
    period = 2 * (n - 1)
    k = i % period
    return int(frames[k if k < n else period - k])


class Renderer:
    """Load a trained run once, then render frames for any audio."""

    def __init__(self, subject_dir: Path, run_dir: Path | None = None, recipe: str = "talkinggaussian") -> None:
        from talksplat.recipes.data import load_subject_data
        from talksplat.train.checkpoint import latest_checkpoint, load_checkpoint
        from talksplat.train.trainer import recipe_classes
        from talksplat.train.trainer import run_dir as default_run_dir

        self.subject_dir = Path(subject_dir)
        run = Path(run_dir) if run_dir else default_run_dir(self.subject_dir, recipe)
        ckpt = latest_checkpoint(run / "checkpoints")
        if ckpt is None:
            raise TalksplatError(f"no trained model in {run}; run `talksplat train {self.subject_dir}` first")
        recipe_cls, cfg_cls = recipe_classes(recipe)
        tensors, cfg, _ = load_checkpoint(ckpt, recipe=recipe, config_type=cfg_cls)
        self.data = load_subject_data(self.subject_dir, cfg.size, cfg.audio_feature)
        self.model = recipe_cls(self.data, cfg)
        self.model.load_state_tensors(tensors)
        self.model.eval()
        self.cfg = cfg
        self.crop = json.loads((self.subject_dir / "crop.json").read_text())

    def audio_windows(self, samples: np.ndarray) -> torch.Tensor:
        from talksplat.features.audio import AudioFeatures, num_frames_for_samples

        n_frames = num_frames_for_samples(len(samples))
        feats = AudioFeatures(self.cfg.audio_feature).compute_samples(samples, n_frames)
        feats = feats[:, None, :] if feats.ndim == 2 else feats
        return torch.from_numpy(np.ascontiguousarray(feats)).float()

    @torch.no_grad()
    def render_frames(self, samples: np.ndarray, options: RenderOptions | None = None) -> Iterator[np.ndarray]:
        """Yields one uint8 RGB frame per 1/25 s of ``samples`` (16 kHz mono float32)."""
        options = options or RenderOptions()
        windows = self.audio_windows(samples)
        neutral = self.data.expressions[self.data.train_frames].median(dim=0).values
        for i in range(windows.shape[0]):
            src = pingpong(i, self.data.train_frames) if options.pose == "loop" else int(self.data.train_frames[0])
            code = self.model.audio(windows, i)
            expression = self.data.expressions[src] if options.expression == "video" else neutral
            out = self.model.render(src, audio_code=code, expression=expression)
            frame = (out["image"].clamp(0, 1).numpy() * 255).round().astype(np.uint8)
            yield self.paste_back(frame, out["alpha"].numpy()[..., 0], src) if options.full_frame else frame

    def paste_back(self, crop_rgb: np.ndarray, alpha: np.ndarray, src: int) -> np.ndarray:
        """Blends the rendered crop into source frame ``src`` with a feathered head mask."""
        import cv2

        full = self._source_frame(src)
        c = self.crop
        side = int(c["side"])
        patch = cv2.resize(crop_rgb, (side, side), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        mask = cv2.resize(alpha.astype(np.float32), (side, side), interpolation=cv2.INTER_LINEAR)
        sigma = max(side * FEATHER_SIGMA_FRACTION, 1.0)
        mask = cv2.GaussianBlur(mask, (0, 0), sigma)[..., None]
        y0, x0 = int(c["y0"]), int(c["x0"])
        region = full[y0:y0 + side, x0:x0 + side].astype(np.float32)
        full[y0:y0 + side, x0:x0 + side] = (mask * patch + (1 - mask) * region).round().astype(np.uint8)
        return full

    def _source_frame(self, index: int) -> np.ndarray:
        if not hasattr(self, "_full_frames"):
            from talksplat.io.video import read_video

            self._full_frames = read_video(self.subject_dir / "media" / "full.mp4")
        return self._full_frames[min(index, len(self._full_frames) - 1)].copy()


def render_video(renderer: Renderer, audio_path: Path, out_path: Path, options: RenderOptions | None = None) -> dict:
    """Renders ``audio_path`` to an H.264 MP4 with the audio muxed; returns a summary."""
    from tqdm import tqdm

    from talksplat.features.audio import load_audio_16k, num_frames_for_samples
    from talksplat.io.video import VideoWriter

    samples = load_audio_16k(audio_path)
    seconds = len(samples) / 16_000
    if seconds > MAX_AUDIO_SECONDS:
        raise TalksplatError(f"{audio_path} is {seconds:.0f} s long; the limit is {MAX_AUDIO_SECONDS:.0f} s, "
                             "split it into shorter files")
    n_frames = num_frames_for_samples(len(samples))
    options = options or RenderOptions()
    frames = renderer.render_frames(samples, options)
    first = next(frames)
    height, width = first.shape[:2]
    with VideoWriter(out_path, width, height, fps=25, audio=samples, sample_rate=16_000) as writer:
        writer.write(first)
        for frame in tqdm(frames, total=n_frames - 1, desc="rendering", unit="frame"):
            writer.write(frame)
    return {"frames": n_frames, "seconds": seconds, "size": [width, height], "output": str(out_path)}
