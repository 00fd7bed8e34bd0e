"""``talksplat demo``: the whole pipeline on a fresh machine with nothing but the package.

synthesise a speaking subject (bundled photo + bundled CC-BY speech) -> prepare -> train briefly ->
render it speaking a bundled clip it never heard -> a side-by-side of held-out frames -> summary.
Every step is resumable: re-running the demo skips what is already done.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from talksplat.errors import UsageError


@dataclass
class DemoConfig:
    seconds: float = 20.0
    size: int = 256
    seed: int = 0
    static_iters: int = 1000
    motion_iters: int = 1500
    finetune_iters: int = 300
    unseen_clip_seconds: float = 10.0

    @classmethod
    def tiny(cls) -> DemoConfig:
        """Seconds-scale version for tests."""
        return cls(seconds=5.6, size=64, static_iters=20, motion_iters=10, finetune_iters=4, unseen_clip_seconds=1.0)

    def estimated_minutes(self) -> float:
        # Measured on 2 cores: ~0.6 s per synthetic second (synth + prepare), ~0.1 s per iteration
        # at 256^2, ~0.1 s per rendered frame.
        iters = self.static_iters + self.motion_iters + self.finetune_iters
        scale = (self.size / 256) ** 2
        return (0.6 * self.seconds + 0.1 * iters * scale + 0.1 * 25 * (self.unseen_clip_seconds + 2)) / 60


def run_demo(out_dir: Path, cfg: DemoConfig, quiet: bool = False) -> dict:
    from talksplat.core.constants import SAMPLE_RATE
    from talksplat.engine.trainer import TrainerConfig, train
    from talksplat.io.audio import load_audio, save_wav
    from talksplat.prepare import PrepareConfig, prepare
    from talksplat.recipes.talkinggaussian import TalkingGaussian, TalkingGaussianConfig
    from talksplat.render.renderer import Renderer, render_video
    from talksplat.synthetic import SynthConfig, bundled_clips, generate

    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def timed(name, fn):
        start = time.perf_counter()
        result = fn()
        timings[name] = round(time.perf_counter() - start, 1)
        return result

    work = out_dir / "work"
    synth_cfg = SynthConfig(seconds=cfg.seconds, size=max(cfg.size, 128), seed=cfg.seed, use_phones=cfg.size >= 256)
    video = timed("synthesise", lambda: _cached_synth(generate, synth_cfg, work / "synth", not quiet))
    subject = work / "subject"
    timed("prepare", lambda: prepare(video, subject, PrepareConfig(size=max(cfg.size, 128)), quiet=quiet))
    recipe_cfg = TalkingGaussianConfig(size=cfg.size, seed=cfg.seed)
    recipe_cfg.iterations.static, recipe_cfg.iterations.motion = cfg.static_iters, cfg.motion_iters
    recipe_cfg.iterations.finetune = cfg.finetune_iters
    trainer_cfg = TrainerConfig(eval_frames=8, quiet=quiet)
    summary = timed("train", lambda: train(subject, TalkingGaussian, recipe_cfg, trainer_cfg))

    renderer = Renderer.open(subject)
    unseen = _unseen_clip(bundled_clips(), video.parent / "ground_truth.json")
    unseen_wav = work / "unseen.wav"
    samples = load_audio(unseen["path"], SAMPLE_RATE)[: int(cfg.unseen_clip_seconds * SAMPLE_RATE)]
    save_wav(unseen_wav, samples)
    talking = timed("render_unseen",
                    lambda: render_video(renderer, unseen_wav, out_dir / "talking.mp4", progress=not quiet))
    side = timed("side_by_side", lambda: _side_by_side(renderer, subject, out_dir / "side_by_side.mp4"))
    result = {
        "what": "talksplat demo: synthetic subject -> prepare -> train (TalkingGaussian) -> render unseen speech",
        "config": asdict(cfg), "seconds_per_step": timings, "total_seconds": round(sum(timings.values()), 1),
        "held_out": summary["held_out_by_stage"], "train": {k: summary[k] for k in ("iterations", "gaussians",
                                                                                  "ms_per_iteration_median")},
        "talking": talking, "side_by_side": side,
        "unseen_clip": {k: unseen[k] for k in ("file", "reader", "licence")},
        "threads": torch.get_num_threads(),
    }
    (out_dir / "summary.json").write_text(json.dumps(result, indent=1))
    return result


def _cached_synth(generate, synth_cfg, folder: Path, progress: bool = True) -> Path:
    """The synthetic video, generated once per config (a marker records which)."""
    marker = folder / "done.json"
    if marker.exists() and json.loads(marker.read_text()) == asdict(synth_cfg):
        return folder / "video.mp4"
    video = generate(synth_cfg, folder, progress=progress).video
    marker.write_text(json.dumps(asdict(synth_cfg)))
    return video


def _unseen_clip(clips: list[dict], ground_truth: Path) -> dict:
    """A bundled clip the synthetic subject's audio did not use (its ground truth lists them)."""
    used = {source["file"] for source in json.loads(ground_truth.read_text())["audio"]["sources"]}
    for clip in clips:
        if clip["file"] not in used:
            return clip
    raise UsageError("every bundled clip drives the synthetic subject; use a shorter --seconds")


@torch.no_grad()
def _side_by_side(renderer, subject: Path, out_path: Path) -> dict:
    """Ground truth | render of the held-out frames, with their own audio."""
    from talksplat.core.constants import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
    from talksplat.engine.losses import psnr
    from talksplat.io.audio import load_audio
    from talksplat.io.video import VideoWriter

    data, avatar = renderer.data, renderer.avatar
    frames = data.val_frames
    samples = load_audio(subject / "audio" / "audio.wav", SAMPLE_RATE)
    clip = samples[int(frames[0]) * SAMPLES_PER_FRAME: (int(frames[-1]) + 1) * SAMPLES_PER_FRAME]
    scores = []
    with VideoWriter(out_path, 2 * data.size, data.size, fps=FPS, audio=clip, sample_rate=SAMPLE_RATE) as writer:
        for t in frames:
            rendered = avatar.render_own(int(t))["image"].clamp(0, 1)
            truth = data.image(int(t))
            scores.append(psnr(rendered, truth))
            both = torch.cat([truth, rendered], dim=1)
            writer.write((both.numpy() * 255).round().astype(np.uint8))
    return {"frames": len(frames), "psnr_mean": round(float(np.mean(scores)), 2), "output": str(out_path)}
