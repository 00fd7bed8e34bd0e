"""Rasterizer speed: the C++ CPU kernel vs the pure-PyTorch reference, in one run.

For N in {10k, 30k, 100k} Gaussians at 256^2 and 512^2, with 1 and 2 threads, times forward and
forward+backward (median of --repeats after a warm-up) and the peak resident memory. Each
(backend, case, threads) runs in its own subprocess so peak RSS is per case and thread settings
cannot leak between cases. Prints a table of times and fast/reference ratios, checks the issue's
targets, and writes benchmarks/results/rasterizer.json.

    .venv/bin/python benchmarks/rasterizer.py [--repeats 5] [--skip-reference] [--quick]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _machine import machine_info

RESULTS = Path(__file__).parent / "results" / "rasterizer.json"
SIZES = (10_000, 30_000, 100_000)
RESOLUTIONS = (256, 512)
THREADS = (1, 2)
MEAN_RADIUS_PX_AT_512 = 12.0
# Targets from the engine issue (2 threads, 512^2): name -> (N, res, measure, limit).
TARGETS_MS = {
    "30k@512 forward <= 30 ms": (30_000, 512, "forward_ms", 30.0),
    "30k@512 forward+backward <= 110 ms": (30_000, 512, "fwd_bwd_ms", 110.0),
    "100k@512 forward <= 90 ms": (100_000, 512, "forward_ms", 90.0),
}
MIN_SPEEDUP_FWD_BWD = 30.0


def run_case(backend: str, n: int, res: int, threads: int, repeats: int) -> dict:
    """Runs inside the child process."""
    import torch

    import talksplat  # noqa: F401  - first, so its OpenMP settings apply as they do for users
    from talksplat.gaussians import rasterize
    from talksplat.gaussians.scenes import random_scene

    torch.set_num_threads(threads)
    # Same Gaussians at both resolutions; the screen radius scales with the image.
    scene = random_scene(n, res, res, mean_radius_px=MEAN_RADIUS_PX_AT_512 * res / 512, seed=0)
    params = [t.clone().requires_grad_() for t in scene.gaussians()]
    baseline_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def forward():
        with torch.no_grad():
            return rasterize(*scene.gaussians(), *scene.camera(), backend=backend)

    def forward_backward():
        out = rasterize(*params, *scene.camera(), backend=backend)
        (out.image.sum() + out.alpha.sum() + 0.1 * out.depth.sum()).backward()
        for p in params:
            p.grad = None

    def median_ms(fn):
        fn()  # warm-up (also builds the kernel on first use)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times), times

    first = forward()
    fwd, fwd_all = median_ms(forward)
    fb, fb_all = median_ms(forward_backward)
    radii = first.meta["radii"][first.meta["visible"]].float()
    return {
        "backend": first.meta["backend"], "n": n, "res": res, "threads": threads,
        "forward_ms": fwd, "fwd_bwd_ms": fb, "forward_all_ms": fwd_all, "fwd_bwd_all_ms": fb_all,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "baseline_rss_mb": baseline_mb, "mean_radius_px": radii.mean().item(),
        "visible": int(radii.shape[0]), "n_isects": first.meta["n_isects"],
    }


def spawn(backend: str, n: int, res: int, threads: int, repeats: int) -> dict:
    args = json.dumps({"backend": backend, "n": n, "res": res, "threads": threads, "repeats": repeats})
    proc = subprocess.run([sys.executable, __file__, "--child", args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"backend": backend, "n": n, "res": res, "threads": threads, "error": proc.stderr.strip()[-300:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt(value, digits=1):
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(rows: list[dict]) -> None:
    header = ("N", "res", "thr", "fast fwd", "fast f+b", "ref fwd", "ref f+b", "x fwd", "x f+b",
              "fast RSS", "ref RSS", "radius", "isects")
    print(" | ".join(f"{h:>8}" for h in header))
    for r in rows:
        cells = (r["n"], r["res"], r["threads"], fmt(r["fast"].get("forward_ms")),
                 fmt(r["fast"].get("fwd_bwd_ms")), fmt(r["ref"].get("forward_ms")), fmt(r["ref"].get("fwd_bwd_ms")),
                 fmt(r.get("speedup_forward")), fmt(r.get("speedup_fwd_bwd")), fmt(r["fast"].get("peak_rss_mb"), 0),
                 fmt(r["ref"].get("peak_rss_mb"), 0), fmt(r["fast"].get("mean_radius_px")), r["fast"].get("n_isects"))
        print(" | ".join(f"{c!s:>8}" for c in cells))
    print("times in ms (median), RSS = peak resident MB of the process (torch alone ~"
          f"{fmt(rows[0]['fast'].get('baseline_rss_mb'), 0)} MB), x = reference time / fast time")


def check_targets(rows: list[dict]) -> dict:
    verdicts = {}
    by_case = {(r["n"], r["res"], r["threads"]): r for r in rows}
    for name, (n, res, measure, limit) in TARGETS_MS.items():
        row = by_case.get((n, res, 2))
        value = row["fast"].get(measure) if row else None
        verdicts[name] = {"measured_ms": value, "met": value is not None and value <= limit}
    speedups = [r["speedup_fwd_bwd"] for r in rows if r.get("speedup_fwd_bwd")]
    verdicts[f"fast >= {MIN_SPEEDUP_FWD_BWD:.0f}x reference (fwd+bwd, every case)"] = {
        "measured_min": min(speedups) if speedups else None,
        "met": bool(speedups) and min(speedups) >= MIN_SPEEDUP_FWD_BWD}
    for name, verdict in verdicts.items():
        shown = verdict.get("measured_ms", verdict.get("measured_min"))
        print(f"  [{'met' if verdict['met'] else 'MISSED'}] {name}: {fmt(shown)}")
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-reference", action="store_true", help="time only the fast backend")
    parser.add_argument("--quick", action="store_true", help="only 30k Gaussians at 512^2 with 2 threads")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_case(**json.loads(args.child))))
        return
    cases = [(30_000, 512, 2)] if args.quick else [(n, r, t) for n in SIZES for r in RESOLUTIONS for t in THREADS]
    rows = []
    for n, res, threads in cases:
        fast = spawn("cpu", n, res, threads, args.repeats)
        ref = {} if args.skip_reference else spawn("reference", n, res, threads, args.repeats)
        row = {"n": n, "res": res, "threads": threads, "fast": fast, "ref": ref}
        for measure in ("forward", "fwd_bwd"):
            key = f"{measure}_ms"
            if fast.get(key) and ref.get(key):
                row[f"speedup_{measure}"] = ref[key] / fast[key]
        rows.append(row)
        print(f"done N={n} {res}^2 threads={threads}: fast {fmt(fast.get('forward_ms'))}/"
              f"{fmt(fast.get('fwd_bwd_ms'))} ms, reference {fmt(ref.get('forward_ms'))}/"
              f"{fmt(ref.get('fwd_bwd_ms'))} ms {fast.get('error', '')}{ref.get('error', '')}", flush=True)
    print()
    print_table(rows)
    verdicts = check_targets(rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": machine_info(), "repeats": args.repeats, "rows": rows,
                                   "targets": verdicts}, indent=1))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
