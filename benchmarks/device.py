"""CPU vs CUDA for one TalkingGaussian subject: training ms per iteration and end-to-end render FPS.

    .venv/bin/python benchmarks/device.py SUBJECT_DIR [--iters 300 600 100] [--size 256] [--seconds 8] [--work DIR]

Trains the same short schedule on each device (``--device cpu`` / ``cuda``, one run folder each),
renders the subject's own first ``--seconds`` of audio with each run on its own device (H.264, as
``talksplat render``), and compares the two renders of the CUDA run (GPU vs CPU) frame by frame.
Prints a table and writes benchmarks/results/device.json. Without CUDA and gsplat it says so and
exits 1: this is the check a session with a GPU runs (the project's machines have none).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import talksplat  # noqa: F401  - before torch, so talksplat's OpenMP settings apply as for users

# isort: split
import numpy as np
from _machine import machine_info

RESULTS = Path(__file__).parent / "results" / "device.json"


def train_on(subject: Path, device: str, iters: list[int], size: int, out: Path) -> dict:
    from talksplat.engine.config import apply_overrides
    from talksplat.engine.trainer import TrainerConfig, train
    from talksplat.recipes import RECIPES

    cls = RECIPES["talkinggaussian"]
    overrides = {"size": size, **{f"iterations.{stage}": n for stage, n in zip(("static", "motion", "finetune"), iters)}}
    start = time.perf_counter()
    summary = train(subject, cls, apply_overrides(cls.Config(), overrides),
                    TrainerConfig(quiet=True, device=device), out_dir=out, restart=True)
    return {"device": summary["device"], "train_seconds": round(time.perf_counter() - start, 1),
            "ms_per_iteration_median": summary["ms_per_iteration_median"], "gaussians": summary["gaussians"],
            "held_out": summary["held_out_by_stage"]}


def render_on(subject: Path, run: Path, device: str, samples: np.ndarray) -> tuple[dict, np.ndarray]:
    from talksplat.io.video import VideoWriter
    from talksplat.render.renderer import Renderer, RenderOptions, default_workers

    renderer = Renderer.open(subject, run=run, device=device)
    workers = default_workers(renderer.avatar.device)
    frames = []
    with tempfile.TemporaryDirectory() as tmp, VideoWriter(Path(tmp) / "o.mp4", renderer.size, renderer.size,
                                                           audio=samples) as writer:
        start = time.perf_counter()
        for frame in renderer.render_frames(samples, RenderOptions(), workers=workers):
            writer.write(frame)
            frames.append(frame)
        seconds = time.perf_counter() - start
    return {"device": device, "workers": workers, "fps": round(len(frames) / seconds, 2)}, np.stack(frames)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("subject", type=Path)
    parser.add_argument("--iters", type=int, nargs=3, default=[300, 600, 100])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "talksplat_device")
    args = parser.parse_args()

    from talksplat.engine.device import cuda_status
    from talksplat.features.audio import load_audio_16k

    usable, why = cuda_status()
    if not usable:
        print(f"no CUDA run possible here: {why}", file=sys.stderr)
        return 1
    samples = load_audio_16k(args.subject / "audio" / "audio.wav")[: int(args.seconds * 16_000)]
    rows, frames = [], {}
    for device in ("cpu", "cuda"):
        run = args.work / device
        trained = train_on(args.subject, device, args.iters, args.size, run)
        rendered, frames[device] = render_on(args.subject, run, device, samples)
        rows.append({**trained, "render_fps": rendered["fps"], "render_workers": rendered["workers"]})
        print(f"{device}: {trained['ms_per_iteration_median']} ms/it, {trained['train_seconds']} s training, "
              f"{rendered['fps']} FPS rendering", flush=True)
    _, cpu_frames = render_on(args.subject, args.work / "cuda", "cpu", samples)
    difference = np.abs(cpu_frames.astype(int) - frames["cuda"].astype(int))
    agreement = {"mean_abs_grey_levels": round(float(difference.mean()), 3),
                 "p99_abs_grey_levels": float(np.percentile(difference, 99))}
    print(f"the CUDA run rendered on the GPU vs the CPU: mean |difference| {agreement['mean_abs_grey_levels']} grey "
          f"levels, 99th percentile {agreement['p99_abs_grey_levels']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": machine_info(), "subject": str(args.subject.resolve()),
                                   "iters": args.iters, "size": args.size, "rows": rows,
                                   "gpu_vs_cpu_render": agreement}, indent=1))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
