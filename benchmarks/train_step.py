"""Where a TalkingGaussian motion-stage training iteration spends its time.

    .venv/bin/python benchmarks/train_step.py SUBJECT_DIR [--size 256] [--gaussians 30000] [--iters 30]

Times, per iteration (median): audio encoder, both motion fields, both rasterizations + fusion,
loss, backward (everything), densification bookkeeping and optimizer steps. Writes
benchmarks/results/train_step.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import talksplat  # noqa: F401  - before torch, so talksplat's OpenMP settings apply as for users
import torch
from _machine import machine_info

from talksplat.gaussians import rasterize
from talksplat.recipes.data import load_subject_data
from talksplat.recipes.talkinggaussian import TalkingGaussian, TalkingGaussianConfig
from talksplat.train.losses import l1_dssim

RESULTS = Path(__file__).parent / "results" / "train_step.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("subject", type=Path)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--gaussians", type=int, default=30_000, help="face-branch Gaussians")
    parser.add_argument("--iters", type=int, default=30)
    args = parser.parse_args()

    cfg = TalkingGaussianConfig(size=args.size, face_points=args.gaussians)
    model = TalkingGaussian(load_subject_data(args.subject, args.size), cfg)
    step = cfg.iterations.static + 1  # a motion-stage step: every part runs
    timings: dict[str, list[float]] = {}

    @contextmanager
    def timed(name):
        start = time.perf_counter()
        yield
        timings.setdefault(name, []).append((time.perf_counter() - start) * 1000)

    for i in range(args.iters + 3):
        t = model.sample_frame(step + i)
        target = model.data.image(t)
        with timed("total"):
            with timed("audio encoder"):
                code, expr = model.conditions(t)
            with timed("motion fields"):
                face_g = model.face.gaussians((code, expr))
                mouth_g = model.mouth.gaussians((code, None))
            with timed("rasterize + fuse"):
                viewmat, K, size = model.data.w2c[t], model.data.K, cfg.size
                face = rasterize(*face_g.values(), viewmat, K, size, size)
                mouth = rasterize(*mouth_g.values(), viewmat, K, size, size)
                image = face.image + (1 - face.alpha) * (mouth.image + (1 - mouth.alpha) * model.data.backdrop(t))
            with timed("loss (L1 + D-SSIM)"):
                loss = l1_dssim(image, target, cfg.dssim_weight)
            with timed("backward"):
                loss.backward()
            with timed("optimizer"):
                model._optimizer_step("motion")
        if i < 3:  # warm-up
            for values in timings.values():
                values.clear()

    rows = {name: statistics.median(values) for name, values in timings.items()}
    print(f"motion-stage iteration at {args.size}^2, {model.num_gaussians()} Gaussians, "
          f"{torch.get_num_threads()} threads (median of {args.iters}):")
    for name, ms in rows.items():
        print(f"  {name:<20} {ms:7.1f} ms")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": machine_info(), "size": args.size,
                                   "gaussians": model.num_gaussians(), "median_ms": rows}, indent=1))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
