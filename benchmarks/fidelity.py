"""Fidelity of trained avatars (issue #20): blinks, EAR, eye-region and mouth-interior figures (teeth at
equal opening too), and the A/V offset per driving voice, self-driven (held-out) and cross-driven.

    .venv/bin/python benchmarks/fidelity.py NAME=SUBJECT_DIR:RUN_DIR [...] [--voices A.wav B.wav ...]
                                             [--out-root DIR] [--key KEY]

For every avatar: ``talksplat eval`` on the held-out frames, then once per voice (cross-driven, the
real training video as the reference). Prints one table per avatar and writes the figures under KEY
in benchmarks/results/fidelity.json (the eval outputs themselves go to --out-root).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _machine import machine_info

import talksplat  # noqa: F401  - before torch, so talksplat's OpenMP settings apply as for users
from talksplat.eval import EvalConfig, evaluate_subject

RESULTS = Path(__file__).parent / "results" / "fidelity.json"


def _avatar(spec: str) -> tuple[str, Path, Path]:
    name, _, paths = spec.partition("=")
    subject, _, run = paths.partition(":")
    return name, Path(subject), Path(run)


def _row(m: dict) -> dict:
    """The figures of one eval that issue #20 asks for."""
    eyes, mouth, sync = m["eyes"], m["mouth_interior"], m["sync"]
    row = {"mode": m["mode"], "audio": Path(m["audio"]).name if m["mode"] == "cross" else "held-out",
           "blinks_per_minute": eyes["ours"]["blinks_per_minute"],
           "real_blinks_per_minute": eyes["reference"]["blinks_per_minute"],
           "ear_median": eyes["ours"]["ear_median"], "ear_p5": eyes["ours"]["ear_p5"], "ear_min": eyes["ours"]["ear_min"],
           "real_ear_median": eyes["reference"]["ear_median"], "real_ear_p5": eyes["reference"]["ear_p5"],
           "real_ear_min": eyes["reference"]["ear_min"],
           "mouth_sharpness_ratio": mouth["sharpness_ratio"],
           "teeth_by_opening": mouth.get("teeth_by_opening"),
           "offset_frames": sync["ours"]["offset_frames"], "offset_confidence": sync["ours"]["confidence"],
           "real_offset_frames": sync["reference"]["offset_frames"],
           "offset_profile": sync["ours"].get("scores"), "real_offset_profile": sync["reference"].get("scores")}
    if m["mode"] == "self":
        row.update({"psnr": m["image"]["full"]["psnr"], "psnr_head": (m["image"]["head"] or {}).get("psnr"),
                    "psnr_eye_region": eyes.get("psnr_eye_region"), "psnr_mouth_interior": mouth["psnr"],
                    "mouth_frames": mouth["frames"]})
    return row


def _f(x, d: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{d}f}"


def _print(name: str, rows: list[dict]) -> None:
    print(f"\n{name}")
    print("| driving | blinks/min ours (real) | EAR p5 ours (real) | EAR min ours (real) | offset ours (real) | "
          "mouth sharpness | teeth, most open tenth: ours at own opening / on the real frames (real) | "
          "PSNR / head / eyes / mouth |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        image = (f"{_f(r['psnr'])} / {_f(r['psnr_head'])} / {_f(r['psnr_eye_region'])} / {_f(r['psnr_mouth_interior'])}"
                 if r["mode"] == "self" else "-")
        print(f"| {r['audio']} | {_f(r['blinks_per_minute'], 1)} ({_f(r['real_blinks_per_minute'], 1)}) | "
              f"{_f(r['ear_p5'], 3)} ({_f(r['real_ear_p5'], 3)}) | {_f(r['ear_min'], 3)} ({_f(r['real_ear_min'], 3)}) | "
              f"{r['offset_frames']} ({r['real_offset_frames']}) | {_f(r['mouth_sharpness_ratio'])} | "
              f"{_teeth(r['teeth_by_opening'])} | {image} |")


def _teeth(teeth: dict | None) -> str:
    """The most open bin of the teeth comparison (docs/eval.md, "Teeth at equal opening")."""
    if not teeth or not teeth.get("bins"):
        return "n/a"
    top = teeth["bins"][-1]
    on_real = f" / {_f(top['ours_on_reference_frames'])}" if "ours_on_reference_frames" in top else ""
    return f"{_f(top['ours_at_own_opening'])} ({top['ours_frames']} frames){on_real} ({_f(top['reference'])})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("avatars", nargs="+", help="NAME=SUBJECT_DIR:RUN_DIR")
    parser.add_argument("--voices", nargs="*", type=Path, default=[])
    parser.add_argument("--out-root", type=Path, default=Path("/tmp/fidelity-eval"))
    parser.add_argument("--key", default="fidelity")
    args = parser.parse_args()
    entry = {"machine": machine_info(), "note": "2-core machine shared with other jobs", "avatars": {}}
    for spec in args.avatars:
        name, subject, run = _avatar(spec)
        rows = []
        for audio in [None, *args.voices]:
            out = args.out_root / name / ("self" if audio is None else f"driven-{audio.stem}")
            tic = time.perf_counter()
            m = evaluate_subject(subject, run, audio, out, EvalConfig(progress=False))
            rows.append({**_row(m), "eval_seconds": time.perf_counter() - tic})
        _print(name, rows)
        entry["avatars"][name] = {"subject": str(subject), "run": str(run), "rows": rows}
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}   # read late: runs may go in parallel
    results[args.key] = entry
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {RESULTS} [{args.key}]")


if __name__ == "__main__":
    main()
