"""Acceptance figures of ``talksplat prepare`` -> benchmarks/results/prepare.json.

1. The synthetic subject (20 s, 512 px, seed 0) against its ground truth: rotation error,
   translation direction, focal, inside-mouth IoU, blinks, speed (ms per frame at 512^2).
2. Focal observability: shorter synthetic clips (8 s, seed 0) rendered with other focal lengths
   (``focal_factor`` 1.0 and 4.5 instead of 2.0); the focal found vs the true one for each.
3. Every clip in ../shared/data/video/ (skipped when absent): detection rate, landmark
   reprojection error, pose jitter of the per-frame PnP fit vs the stabilised cameras, speed.

Inside-mouth IoU (``evaluate.mask_agreement``): "pooled" = intersection over union of the pixels of
all frames together (frames where truth and prediction are both empty add nothing; a prediction
where the truth is empty adds to the union); "median" = median per-frame IoU over the frames whose
true opening has at least 20 pixels.

    .venv/bin/python benchmarks/prepare.py [--work /tmp/prepare_bench] [--no-synthetic] [--no-focal-sweep]
                                           [--no-shared]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_VIDEO = ROOT.parent / "shared" / "data" / "video"
RESULTS = ROOT / "benchmarks" / "results" / "prepare.json"
SYNTH_SECONDS, SYNTH_SIZE, SYNTH_SEED = 20.0, 512, 0
FOCAL_SWEEP_FACTORS, FOCAL_SWEEP_SECONDS = (1.0, 4.5), 8.0
SUMMARY_KEYS = ("frames", "detection_rate", "focal_px", "focal_source_px", "focal_range_source_px",
                "reprojection_error_raw_px", "reprojection_error_px", "keypoint_error_px", "jitter_raw_deg",
                "jitter_deg", "jitter_raw_mm", "jitter_mm", "blinks", "av_offset", "audio_shift_applied_frames",
                "ms_per_frame", "step_seconds")


def _prepare(video: Path, out: Path, size: int) -> dict:
    from talksplat.prepare import PrepareConfig, prepare

    start = time.perf_counter()
    result = prepare(video, out, PrepareConfig(size=size), quiet=True, force=True)
    summary = {k: result.summary.get(k) for k in SUMMARY_KEYS}
    summary["wall_seconds"] = round(time.perf_counter() - start, 2)
    return summary


def synthetic(work: Path) -> dict:
    from talksplat.prepare.evaluate import evaluate_synthetic
    from talksplat.synthetic import SynthConfig, generate

    synth_dir = work / f"synth_{SYNTH_SIZE}_{SYNTH_SEED}"
    if not (synth_dir / "ground_truth.npz").is_file():
        generate(SynthConfig(seconds=SYNTH_SECONDS, size=SYNTH_SIZE, seed=SYNTH_SEED), synth_dir)
    subject = work / "subject_synth"
    summary = _prepare(synth_dir / "video.mp4", subject, SYNTH_SIZE)
    return {"clip": f"talksplat synth --seconds {SYNTH_SECONDS:g} --size {SYNTH_SIZE} --seed {SYNTH_SEED}",
            "summary": summary, "ground_truth": evaluate_synthetic(subject, synth_dir),
            "subject_dir": str(subject)}


def focal_sweep(work: Path) -> list[dict]:
    """The synthetic subject seen through other lenses: does the focal found follow the true one?"""
    from talksplat.prepare.evaluate import evaluate_synthetic
    from talksplat.synthetic import SynthConfig, generate

    out = []
    for factor in FOCAL_SWEEP_FACTORS:
        synth_dir = work / f"synth_{SYNTH_SIZE}_{SYNTH_SEED}_focal{factor:g}"
        if not (synth_dir / "ground_truth.npz").is_file():
            generate(SynthConfig(seconds=FOCAL_SWEEP_SECONDS, size=SYNTH_SIZE, seed=SYNTH_SEED, focal_factor=factor,
                                 masks=False), synth_dir)
        subject = work / f"subject_synth_focal{factor:g}"
        summary = _prepare(synth_dir / "video.mp4", subject, SYNTH_SIZE)
        gt = evaluate_synthetic(subject, synth_dir)
        row = {"focal_factor": factor, "seconds": FOCAL_SWEEP_SECONDS, "focal_true_px": gt["focal_true_px"],
               "focal_source_px": gt["focal_source_px"], "focal_relative_error": gt["focal_relative_error"],
               "focal_range_source_px": summary["focal_range_source_px"],
               "rotation_error_deg_median_stabilised": gt["rotation_error_deg_median_stabilised"]}
        out.append(row)
        print(f"focal_factor {factor:g}: true {row['focal_true_px']:.0f} px, found {row['focal_source_px']:.0f} px",
              flush=True)
    return out


def shared(work: Path) -> list[dict]:
    out = []
    for video in sorted(SHARED_VIDEO.glob("*.mp4")):
        summary = _prepare(video, work / f"subject_{video.stem}", 512)
        out.append({"clip": video.name, "summary": summary, "subject_dir": str(work / f"subject_{video.stem}")})
        print(f"{video.name}: detection {summary['detection_rate']:.3f}, jitter {summary['jitter_raw_deg']:.3f} -> "
              f"{summary['jitter_deg']:.3f} deg, {summary['ms_per_frame']:.1f} ms/frame", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/talksplat_prepare_bench"))
    parser.add_argument("--no-synthetic", action="store_true")
    parser.add_argument("--no-focal-sweep", action="store_true")
    parser.add_argument("--no-shared", action="store_true")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                 "processor": platform.processor() or platform.machine()},
                     "note": "ms_per_frame = wall time of every step except audio features / frames, --size 512"}
    if RESULTS.is_file():
        previous = json.loads(RESULTS.read_text())
        results.update({k: previous[k] for k in ("synthetic", "focal_sweep", "shared") if k in previous})
    if not args.no_synthetic:
        results["synthetic"] = synthetic(args.work)
        print(json.dumps(results["synthetic"]["ground_truth"], indent=1), flush=True)
    if not args.no_focal_sweep:
        results["focal_sweep"] = focal_sweep(args.work)
    if not args.no_shared:
        if SHARED_VIDEO.is_dir():
            results["shared"] = shared(args.work)
        else:
            print(f"{SHARED_VIDEO} is absent: shared clips skipped")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
