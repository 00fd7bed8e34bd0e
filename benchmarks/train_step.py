"""Where a TalkingGaussian motion-stage training iteration spends its time, and what a whole engine
iteration costs (optionally against another checkout of talksplat, interleaved in one run).

    .venv/bin/python benchmarks/train_step.py SUBJECT_DIR [--size 256] [--gaussians 30000] [--iters 30]
    .venv/bin/python benchmarks/train_step.py SUBJECT_DIR --compare-src /path/to/other/checkout/src [--rounds 4]

Breakdown (median ms): audio encoder, both motion fields, both rasterizations + fusion, loss,
backward (everything), optimizer steps. "engine iteration": ``Engine.train_step`` itself (sampling,
densification bookkeeping and stats included). ``--compare-src``: the same motion-stage iterations
in child processes, alternating this checkout and the other one (A B A B ...), one thread each, so a
ratio comes from one run on one machine (older checkouts without ``talksplat.engine`` are driven
through their recipe's own ``train_step``). Writes benchmarks/results/train_step.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import talksplat  # noqa: F401  - before torch, so talksplat's OpenMP settings apply as for users
import torch
from _machine import machine_info

RESULTS = Path(__file__).parent / "results" / "train_step.json"
THIS_SRC = Path(__file__).resolve().parents[1] / "src"

# Runs in a child process with PYTHONPATH set to one checkout's src: times motion-stage iterations.
CHILD = r"""
import json, statistics, sys, time
import talksplat, torch
subject, size, iters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
try:
    from talksplat.engine.trainer import Engine, build_recipe
    from talksplat.recipes.talkinggaussian import TalkingGaussian, TalkingGaussianConfig
    cfg = TalkingGaussianConfig(size=size)
    engine = Engine(build_recipe(TalkingGaussian, subject, cfg))
    step_fn = engine.train_step
except ImportError:   # a checkout from before the engine: the recipe trained itself
    from talksplat.recipes.data import load_subject_data
    from talksplat.recipes.talkinggaussian import TalkingGaussian, TalkingGaussianConfig
    cfg = TalkingGaussianConfig(size=size)
    step_fn = TalkingGaussian(load_subject_data(subject, size), cfg).train_step
first = cfg.iterations.static   # the motion stage: every part runs
times = []
for i in range(iters + 5):
    tic = time.perf_counter()
    step_fn(first + i)
    times.append(time.perf_counter() - tic)
print(json.dumps({"median_ms": 1000 * statistics.median(times[5:])}))
"""


def compare(subject: Path, other_src: Path, size: int, iters: int, rounds: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    medians: dict[str, list[float]] = {"this": [], "other": []}
    for r in range(rounds):
        for name, src in (("this", THIS_SRC), ("other", other_src)) if r % 2 == 0 else \
                (("other", other_src), ("this", THIS_SRC)):
            out = subprocess.run([sys.executable, "-c", CHILD, str(subject), str(size), str(iters)], check=True,
                                 capture_output=True, text=True, env={**env, "PYTHONPATH": str(src)})
            medians[name].append(json.loads(out.stdout.strip().splitlines()[-1])["median_ms"])
            print(f"  round {r + 1}: {name:<5} {medians[name][-1]:7.1f} ms/iteration")
    this, other = statistics.median(medians["this"]), statistics.median(medians["other"])
    print(f"this checkout {this:.1f} ms, other {other:.1f} ms: ratio this/other {this / other:.3f} "
          f"(median of {rounds} runs of {iters} motion-stage iterations each, 1 thread, interleaved)")
    return {"this_ms": this, "other_ms": other, "ratio": this / other, "runs": medians, "other_src": str(other_src),
            "iterations_per_run": iters}


def breakdown(subject: Path, size: int, gaussians: int, iters: int) -> dict:
    from talksplat.engine.contract import Batch, View
    from talksplat.engine.trainer import Engine, build_recipe
    from talksplat.gaussians import rasterize
    from talksplat.recipes.talkinggaussian import TalkingGaussian, TalkingGaussianConfig

    cfg = TalkingGaussianConfig(size=size, face_points=gaussians)
    engine = Engine(build_recipe(TalkingGaussian, subject, cfg))
    recipe = engine.recipe
    stage = engine.stages[1]
    timings: dict[str, list[float]] = {}

    @contextmanager
    def timed(name):
        start = time.perf_counter()
        yield
        timings.setdefault(name, []).append((time.perf_counter() - start) * 1000)

    step = cfg.iterations.static + 1
    for i in range(iters + 3):
        t = engine.samplers[stage.name].sample(step + i, cfg.iterations.static, stage.iterations, recipe.rng)
        batch = Batch(t, recipe.data.image(t))
        with timed("total (parts)"):
            with timed("audio encoder"):
                conditions = recipe.training_conditions(t, stage)
            with timed("motion fields"):
                face_g, mouth_g = recipe._deformed("face", conditions), recipe._deformed("mouth", conditions)
            with timed("rasterize + fuse"):
                w2c, backdrop = recipe.view_inputs(View(t))
                face = rasterize(*face_g.values(), w2c, recipe.data.K, size, size)
                mouth = rasterize(*mouth_g.values(), w2c, recipe.data.K, size, size)
                image = face.image + (1 - face.alpha) * (mouth.image + (1 - mouth.alpha) * backdrop)
            with timed("loss"):
                weights = recipe.loss_weights()
                terms = recipe.losses({"image": image}, batch, stage)
                loss = sum(weights[k] * v for k, v in terms.items())
            with timed("backward"):
                loss.backward()
            with timed("optimizer"):
                engine._step_optimizers(stage)
        with timed("engine iteration"):
            engine.train_step(step + i)
        if i < 3:  # warm-up
            for values in timings.values():
                values.clear()
    rows = {name: statistics.median(values) for name, values in timings.items()}
    print(f"motion-stage iteration at {size}^2, {recipe.num_gaussians()} Gaussians, "
          f"{torch.get_num_threads()} threads (median of {iters}):")
    for name, ms in rows.items():
        print(f"  {name:<20} {ms:7.1f} ms")
    return {"size": size, "gaussians": recipe.num_gaussians(), "threads": torch.get_num_threads(), "median_ms": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("subject", type=Path)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--gaussians", type=int, default=30_000, help="face-branch Gaussians")
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--compare-src", type=Path, help="another checkout's src folder to time against")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()

    result = {"machine": machine_info()}
    if args.compare_src:
        result["compare"] = compare(args.subject, args.compare_src, args.size, args.iters, args.rounds)
    else:
        result["breakdown"] = breakdown(args.subject, args.size, args.gaussians, args.iters)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
