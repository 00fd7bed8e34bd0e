"""TalkingGaussian's Table 4 in miniature: the full model against three ablations, same budget.

    .venv/bin/python benchmarks/ablation.py SUBJECT_DIR [--iters 600 1500 200] [--parallel 2]

Runs `talksplat train` five times (full, --no-decomposition, --no-incremental-sampling,
--appearance-modification, and --audio-condition learned) with the same iteration budget and seed; with --parallel 2 two runs go
at once with one thread each (all runs then share the same conditions). Prints a table and writes
benchmarks/results/ablation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _machine import machine_info

RESULTS = Path(__file__).parent / "results" / "ablation.json"
VARIANTS = {
    "full model": [],
    "no face-mouth decomposition": ["--set", "decomposition=false"],
    "no incremental sampling": ["--set", "incremental_sampling=false"],
    "appearance modification": ["--set", "appearance_modification=true"],
    # Not in the paper's table: talksplat's lip-state audio condition vs the paper's AudioNet on raw
    # log-mel (docs/training.md).
    "learned audio encoder": ["--set", "audio_condition=learned"],
}


def run_variant(subject: Path, out_root: Path, name: str, flags: list[str], iters: list[int], threads: int) -> dict:
    out = out_root / name.replace(" ", "_")
    cmd = [sys.executable, "-m", "talksplat.cli.main", "train", str(subject), "-o", str(out), "--restart",
           "--iters", *map(str, iters), "--eval-frames", "1000", *flags]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip()[-400:]}
    summary = json.loads((out / "summary.json").read_text())
    final = summary["held_out_by_stage"]["finetune"]  # held-out: the last 10% of the frames
    return {"psnr": final["psnr"], "psnr_head_box": final["psnr_head_box"], "ssim": final["ssim"],
            "mouth_opening_corr": final.get("mouth_opening_corr"),
            "gaussians": summary["gaussians"], "wall_seconds": round(time.perf_counter() - start, 1),
            "ms_per_iteration": summary["ms_per_iteration_median"], "flags": flags}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("subject", type=Path)
    parser.add_argument("--iters", type=int, nargs=3, default=[600, 1500, 200])
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/talksplat_ablation"))
    args = parser.parse_args()
    threads = max(1, 2 // args.parallel)
    with ThreadPoolExecutor(args.parallel) as pool:
        futures = {name: pool.submit(run_variant, args.subject, args.out, name, flags, args.iters, threads)
                   for name, flags in VARIANTS.items()}
        rows = {name: f.result() for name, f in futures.items()}
    print(f"{'variant':<30} {'PSNR':>7} {'head box':>9} {'SSIM':>7} {'lip corr':>9} {'Gaussians':>10} {'minutes':>8}")
    for name, r in rows.items():
        if "error" in r:
            print(f"{name:<30} failed: {r['error']}")
            continue
        lip = r["mouth_opening_corr"]
        lip = f"{lip:9.2f}" if lip is not None else f"{'n/a':>9}"
        print(f"{name:<30} {r['psnr']:7.2f} {r['psnr_head_box']:9.2f} {r['ssim']:7.4f} {lip} {r['gaussians']:10d} "
              f"{r['wall_seconds'] / 60:8.1f}")
    RESULTS.write_text(json.dumps({"machine": machine_info(), "subject": str(args.subject), "iters": args.iters,
                                   "threads_per_run": threads, "parallel": args.parallel, "rows": rows}, indent=1))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
