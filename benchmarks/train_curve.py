"""Time to quality at 256^2 and 512^2 (issue #19): held-out head-box PSNR at 512^2 against training
wall time, for each training size within one budget.

    .venv/bin/python benchmarks/train_curve.py SUBJECT [--recipe talkinggaussian] [--sizes 256 512]
                                               [--minutes 30] [--marks 8] [--eval-frames 16] [--name NAME]

SUBJECT must be prepared at >= 512 (the default). For each size, in turn:

1. **Schedule.** The recipe's default stage schedule, scaled by one factor so that it fits the budget:
   a probe runs PROBE_STEPS steps of every stage (a short schedule of the same shape) and the
   factor is budget / (sum over stages of default iterations x the probe's median ms per step) x
   SAFETY. The probe starts from the seeded Gaussians and densification later adds some, so the
   real run may take longer: it stops at the budget whatever the schedule says (reported).
2. **Training** in this process with ``Engine.train_step`` (the loop ``talksplat train`` runs, without
   its checkpoints and previews), timed step by step.
3. **Marks.** At ``--marks`` evenly spaced steps (and the last) the clock stops and the held-out frames
   are scored at 512^2: rendered at the training size with their own camera, audio and expression
   (``render_own``), upsampled bicubically to 512^2 when trained smaller, against the subject's
   frames at 512^2: PSNR over the crop and over the head box.

Prints a table per size and writes benchmarks/results/train_curve.json (keyed by NAME) and a plot
beside it (train_curve_NAME.png: PSNR against minutes; numbers only, no faces). Run it on an idle
machine: the figures are wall-clock.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import talksplat  # noqa: F401  - before torch, so talksplat's OpenMP settings apply as for users

# isort: split
import numpy as np
import torch
from _machine import machine_info, save_result

from talksplat.data.subject import load_subject_data
from talksplat.engine.losses import psnr
from talksplat.engine.trainer import Engine, build_recipe
from talksplat.recipes import RECIPES

RESULTS = Path(__file__).parent / "results" / "train_curve.json"
SCORE_SIZE = 512
PROBE_STEPS = 20          # per stage
PROBE_WARMUP = 5          # first steps of each probe stage not timed
SAFETY = 0.85             # the probe underestimates a densified model's step


def stage_iterations(cfg) -> dict[str, int]:
    return dataclasses.asdict(cfg.iterations)


def with_iterations(cfg, iterations: dict[str, int], size: int):
    return dataclasses.replace(cfg, size=size, iterations=dataclasses.replace(cfg.iterations, **iterations))


def probe_ms_per_step(recipe_cls, subject: Path, size: int) -> dict[str, float]:
    """Median ms per step of each stage, from a short schedule of the default's shape."""
    default = recipe_cls.Config()
    names = list(stage_iterations(default))
    cfg = with_iterations(default, {n: PROBE_STEPS for n in names}, size)
    engine = Engine(build_recipe(recipe_cls, subject, cfg))
    times: dict[str, list[float]] = {n: [] for n in names}
    for step in range(engine.total):
        tic = time.perf_counter()
        stats = engine.train_step(step)
        times[stats["stage"]].append(time.perf_counter() - tic)
    return {n: 1000 * float(np.median(t[PROBE_WARMUP:] or t)) for n, t in times.items() if t}


def fitted_schedule(recipe_cls, ms: dict[str, float], budget_s: float) -> tuple[dict[str, int], float]:
    default = stage_iterations(recipe_cls.Config())
    predicted = sum(default[n] * ms.get(n, 0.0) for n in default) / 1000
    factor = min(1.0, SAFETY * budget_s / predicted) if predicted > 0 else 1.0
    return {n: max(1, round(k * factor)) if k else 0 for n, k in default.items()}, factor


@torch.no_grad()
def score_at_512(recipe, frames: list[int], truth) -> dict:
    """Held-out PSNR over the crop and the head box at 512^2 (renders upsampled when smaller)."""
    import cv2

    full, head = [], []
    for t in frames:
        image = recipe.render_own(t)["image"].clamp(0, 1)
        if image.shape[0] != SCORE_SIZE:
            image = torch.from_numpy(cv2.resize(image.numpy(), (SCORE_SIZE, SCORE_SIZE),
                                                interpolation=cv2.INTER_CUBIC)).clamp(0, 1)
        target = truth.image(t)
        full.append(psnr(image, target))
        box = truth.head_box(t)
        if box is not None:
            head.append(psnr(image[box], target[box]))
    return {"psnr": round(float(np.mean(full)), 3), "psnr_head_box": round(float(np.mean(head)), 3) if head else None}


def run_size(recipe_cls, subject: Path, size: int, budget_s: float, marks: int, frames: list[int], truth) -> dict:
    ms = probe_ms_per_step(recipe_cls, subject, size)
    iterations, factor = fitted_schedule(recipe_cls, ms, budget_s)
    cfg = with_iterations(recipe_cls.Config(), iterations, size)
    recipe = build_recipe(recipe_cls, subject, cfg)
    engine = Engine(recipe)
    mark_steps = set(np.linspace(0, engine.total - 1, marks + 1).round().astype(int)[1:].tolist())
    curve, train_s, stopped_at_budget = [], 0.0, False
    for step in range(engine.total):
        tic = time.perf_counter()
        stats = engine.train_step(step)
        train_s += time.perf_counter() - tic
        stopped_at_budget = train_s >= budget_s
        if step in mark_steps or stopped_at_budget:
            recipe.eval()
            point = {"step": step + 1, "stage": stats["stage"], "train_seconds": round(train_s, 1),
                     "gaussians": recipe.num_gaussians(), **score_at_512(recipe, frames, truth)}
            recipe.train()
            curve.append(point)
            print(f"  {size}^2  step {point['step']:>5} ({point['stage']:<8}) {train_s / 60:5.1f} min  "
                  f"PSNR {point['psnr']:.2f}  head box {point['psnr_head_box']}", flush=True)
        if stopped_at_budget:
            break
    return {"size": size, "probe_ms_per_step": {k: round(v, 1) for k, v in ms.items()}, "schedule": iterations,
            "schedule_factor": round(factor, 3), "stopped_at_budget": stopped_at_budget, "curve": curve,
            "final": curve[-1] if curve else None}


def plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        minutes = [p["train_seconds"] / 60 for p in r["curve"]]
        ax.plot(minutes, [p["psnr_head_box"] for p in r["curve"]], marker="o",
                label=f"trained at {r['size']}^2" + (" (upsampled)" if r["size"] < SCORE_SIZE else ""))
    ax.set_xlabel("training wall time (min)")
    ax.set_ylabel(f"held-out head-box PSNR at {SCORE_SIZE}^2 (dB)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("subject", type=Path)
    parser.add_argument("--recipe", default="talkinggaussian", choices=sorted(RECIPES))
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--minutes", type=float, default=30.0, help="training budget per size")
    parser.add_argument("--marks", type=int, default=8, help="evaluation points along each run")
    parser.add_argument("--eval-frames", type=int, default=16, help="held-out frames scored at each mark")
    parser.add_argument("--name", default=None, help="key in the results (default: the subject's folder name)")
    args = parser.parse_args()
    truth = load_subject_data(args.subject, SCORE_SIZE)
    if truth.source_size < SCORE_SIZE:
        raise SystemExit(f"{args.subject} was prepared at {truth.source_size}; prepare it at >= {SCORE_SIZE}")
    val = truth.val_frames
    frames = [int(t) for t in val[np.linspace(0, len(val) - 1, min(args.eval_frames, len(val))).round().astype(int)]]
    recipe_cls = RECIPES[args.recipe]
    name = args.name or args.subject.name
    load = os.getloadavg()[0]
    results = []
    for size in args.sizes:
        print(f"{args.recipe} at {size}^2, budget {args.minutes:g} min (load average {os.getloadavg()[0]:.1f})")
        results.append(run_size(recipe_cls, args.subject, size, args.minutes * 60, args.marks, frames, truth))
    print(f"\n| size | schedule | stopped at budget | minutes | Gaussians | PSNR at {SCORE_SIZE}^2 | head box |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        f = r["final"]
        print(f"| {r['size']} | {r['schedule']} | {r['stopped_at_budget']} | {f['train_seconds'] / 60:.1f} | "
              f"{f['gaussians']} | {f['psnr']:.2f} | {f['psnr_head_box']} |")
    png = RESULTS.with_name(f"train_curve_{name}.png")
    plot(results, png, f"{args.recipe}, {name}, {args.minutes:g}-min budget per size")
    save_result(RESULTS, name, {"recipe": args.recipe, "subject": str(args.subject), "budget_minutes": args.minutes,
                                "eval_frames": frames, "load_average_start": round(load, 2),
                                "runs": results, "plot": png.name, "machine": machine_info()})
    print(f"wrote {RESULTS} [{name}] and {png}")


if __name__ == "__main__":
    main()
