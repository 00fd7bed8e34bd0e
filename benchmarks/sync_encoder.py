"""Sync encoder and offset estimation on the real clips in ../shared/data/video (measurement only:
nothing fitted here is shipped). Writes benchmarks/results/sync_encoder.json.

    .venv/bin/python benchmarks/sync_encoder.py [--minutes 2] [--joint-minutes 4]

1. estimate_offset (no weights) on each whole clip with its audio delayed by -8/0/+5/+10 frames.
2. Per clip: train the sync encoder on the first 80% (1 thread), then on the held-out 20% find the
   offset among -15..+15 on 1/2/5 s windows overlapping by half (a held-out part shorter than 5 s
   counts as one window; reference: 0, the alignment it was trained on)
   and the ROC AUC of aligned vs shifted (|s| >= 3) similarities (per pair and pooled over 1 s).
3. Joint: one model on the first 80% of all clips (video/ and video/extra/), offsets corrected
   first with estimate_offset, evaluated the same way on each clip's held-out 20%.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from talksplat.errors import TalksplatError
from talksplat.features.audio import load_audio_16k
from talksplat.features.sync import (
    SyncTrainConfig,
    estimate_offset,
    make_clip,
    shift_audio,
    train_sync_encoder,
)
from talksplat.features.sync_model import MAX_SHIFT, SHIFTS, embed_clip, pooled_shift_scores, track_video_lips

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "video"
CACHE = Path("/tmp/talksplat_bench_sync")      # tracked lips (not in the repo: derived from the footage)
HELD_OUT = 0.2
FPS = 25


def load_lips_audio(video: Path) -> tuple[np.ndarray, np.ndarray]:
    CACHE.mkdir(parents=True, exist_ok=True)
    cached = CACHE / f"{video.stem}_lips.npy"
    if cached.is_file():
        lips = np.load(cached)
    else:
        lips = track_video_lips(video, progress=False)
        np.save(cached, lips)
    return lips, load_audio_16k(video)


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(score of a random positive > a random negative), ties count half."""
    scores = np.concatenate([positive, negative])
    ranks = scores.argsort().argsort() + 1.0
    # average ranks of ties
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = (sums / counts)[inverse]
    n_pos, n_neg = len(positive), len(negative)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def evaluate_held_out(model, clip, start: int, expected: int = 0) -> dict[str, object]:
    """Offset accuracy on 2 s / 5 s windows of frames [start, T) and AUCs."""
    held = clip.slice(start, clip.num_frames)     # audio outside the held-out part is never used
    visual, audio = embed_clip(model, held)
    out: dict[str, object] = {"held_out_frames": held.num_frames}
    for seconds in (1, 2, 5):
        # windows overlap by half; a held-out part shorter than the window is one window
        size = min(seconds * FPS, held.num_frames)
        hits, offsets = 0, []
        starts = list(range(0, held.num_frames - size + 1, max(size // 2, 1)))
        for s0 in starts:
            scores = pooled_shift_scores(visual, audio, np.arange(s0, s0 + size))
            off = int(SHIFTS[int(np.argmax(scores))])
            offsets.append(off)
            hits += abs(off - expected) <= 1
        out[f"windows_{seconds}s"] = len(starts)
        out[f"within1_{seconds}s"] = hits / max(len(starts), 1)
        out[f"offsets_{seconds}s"] = offsets
    frames = np.arange(MAX_SHIFT, held.num_frames - MAX_SHIFT)
    if len(frames) < FPS:                        # too short for +-15 frame shifts inside the part
        return out
    sims = np.stack([np.sum(visual[frames] * audio[frames + s], axis=1) for s in SHIFTS], axis=1)
    far = np.abs(SHIFTS - expected) >= 3
    aligned = sims[:, MAX_SHIFT + expected]
    out["auc_pair"] = roc_auc(aligned, sims[:, far].ravel())
    pooled = np.stack([sims[i:i + FPS].mean(axis=0) for i in range(0, len(sims) - FPS + 1, FPS)])
    out["auc_1s"] = roc_auc(pooled[:, MAX_SHIFT + expected], pooled[:, far].ravel())
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=2.0, help="per-clip training budget")
    parser.add_argument("--joint-minutes", type=float, default=4.0)
    parser.add_argument("--skip-joint", action="store_true")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"{DATA} not found: nothing to measure")
        return 0
    videos = sorted(DATA.glob("*.mp4"))
    extra = sorted((DATA / "extra").glob("*.mp4"))
    data = {v.stem: load_lips_audio(v) for v in videos + extra}
    results: dict[str, object] = {"machine": {"cpus": 2, "python": platform.python_version()},
                                  "threads": 1}

    # 1. offsets of whole clips with known delays
    offsets = {}
    for name, (lips, audio) in data.items():
        rows = []
        for delay in (-8, 0, 5, 10):
            t0 = time.perf_counter()
            est = estimate_offset(lips, shift_audio(audio, -delay))
            rows.append({"delay": delay, "offset": est.offset_frames, "confidence": round(est.confidence, 3),
                         "reliable": est.reliable, "seconds": round(time.perf_counter() - t0, 3)})
        base = rows[1]["offset"]
        offsets[name] = {"frames": len(lips), "rows": rows,
                         "delays_recovered_within1": all(abs(r["offset"] - base - r["delay"]) <= 1 for r in rows)}
        print(name, rows, flush=True)
    results["estimate_offset"] = offsets

    # 2. per-clip sync encoders
    cfg = SyncTrainConfig(minutes=args.minutes, max_steps=100_000)
    per_clip = {}
    for video in videos:
        lips, audio = data[video.stem]
        clip = make_clip(lips, audio, video.stem)
        split = round((1 - HELD_OUT) * clip.num_frames)
        try:
            res = train_sync_encoder([clip.slice(0, split)], cfg, progress=False)
        except TalksplatError as exc:  # a too-short clip is a result, not a crash
            per_clip[video.stem] = {"error": str(exc)}
            print(video.stem, "error", exc, flush=True)
            continue
        ev = evaluate_held_out(res.model, clip, split)
        ev.update(train_seconds=round(res.seconds, 1), steps=res.steps, final_loss=round(res.final_loss, 3))
        per_clip[video.stem] = ev
        print(video.stem, {k: v for k, v in ev.items() if not k.startswith("offsets")}, flush=True)
    results["per_clip"] = per_clip

    # 3. one joint model, offsets corrected first
    if not args.skip_joint:
        train, held = [], []
        for name, (lips, audio) in data.items():
            est = estimate_offset(lips, audio)
            corrected = shift_audio(audio, est.offset_frames) if est.reliable else audio
            clip = make_clip(lips, corrected, name)
            split = round((1 - HELD_OUT) * clip.num_frames)
            train.append(clip.slice(0, split))
            held.append((clip, split, name in {v.stem for v in videos}))
        res = train_sync_encoder(train, SyncTrainConfig(minutes=args.joint_minutes, max_steps=100_000),
                                 progress=False)
        joint = {"train_seconds": round(res.seconds, 1), "steps": res.steps, "final_loss": round(res.final_loss, 3),
                 "clips": {}}
        for clip, split, main_set in held:
            ev = evaluate_held_out(res.model, clip, split)
            ev["in_video_dir"] = main_set
            joint["clips"][clip.name] = ev
            print("joint", clip.name, {k: v for k, v in ev.items() if not k.startswith("offsets")}, flush=True)
        results["joint"] = joint

    out = Path(__file__).parent / "results" / "sync_encoder.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print("wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
