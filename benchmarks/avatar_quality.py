"""Held-out quality of a trained avatar: PSNR/SSIM (full frame and head box) and lip-motion agreement.

    .venv/bin/python benchmarks/avatar_quality.py SUBJECT_DIR [--run RUN_DIR] [--name NAME]

Renders every held-out frame with its own camera, audio and expression, and compares with the real
frame. Lip motion: MediaPipe FaceMesh on the rendered and the real frames, inner-lip gap (landmarks
13-14) divided by the inter-ocular distance (33-263); reports the Pearson correlation over frames.
Appends to benchmarks/results/avatar_quality.json under NAME.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import talksplat  # noqa: F401  - before torch, so talksplat's OpenMP settings apply as for users
import numpy as np
import torch
from _machine import machine_info, save_keyed_result

from talksplat.engine.evaluate import evaluate_held_out
from talksplat.recipes import load_avatar
from talksplat.tracking.facemesh import mouth_opening, track_frames

RESULTS = Path(__file__).parent / "results" / "avatar_quality.json"

@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("subject", type=Path)
    parser.add_argument("--run", type=Path)
    parser.add_argument("--name", default=None)
    args = parser.parse_args()

    avatar = load_avatar(args.subject, run=args.run)
    data = avatar.subject
    frames = data.val_frames
    scores = evaluate_held_out(avatar.recipe, frames)
    rendered, real = [], []
    for t in frames:
        rendered.append((avatar.render_own(int(t))["image"].clamp(0, 1).numpy() * 255).round().astype(np.uint8))
        real.append((data.image(int(t)).numpy() * 255).round().astype(np.uint8))
    gap_render, gap_real = mouth_opening(track_frames(rendered)), mouth_opening(track_frames(real))
    ok = ~(np.isnan(gap_render) | np.isnan(gap_real))
    corr = float(np.corrcoef(gap_render[ok], gap_real[ok])[0, 1]) if ok.sum() > 2 else float("nan")
    result = {**scores, "lip_gap_correlation": corr, "frames_with_both_tracked": int(ok.sum()),
              "held_out_frames": len(frames), "size": data.size}
    print(json.dumps(result, indent=1))
    save_keyed_result(RESULTS, args.name or args.subject.name, {"machine": machine_info(), **result})


if __name__ == "__main__":
    main()
