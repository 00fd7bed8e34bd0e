"""``talksplat eval SUBJECT [--audio OTHER.wav]``: score a trained avatar (report.md, metrics.json, plots)."""

from __future__ import annotations

from pathlib import Path

from talksplat.errors import UsageError


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="score a trained avatar: held-out self-reconstruction, or driven by "
                                           "other audio (--audio)")
    p.add_argument("subject", type=Path, help="a prepared subject with a trained run")
    p.add_argument("--audio", type=Path, help="cross-driven: speech to drive the avatar with (no ground truth)")
    p.add_argument("-o", "--out", type=Path,
                   help="output folder (default SUBJECT/eval, or SUBJECT/eval/driven-NAME with --audio)")
    p.add_argument("--recipe", help="which run of the subject (default: its only run)")
    p.add_argument("--run", type=Path, help="run folder (default SUBJECT/runs/RECIPE)")
    p.add_argument("--lpips-weights", type=Path, metavar="DIR",
                   help="folder with AlexNet + LPIPS v0.1 linear weights (LPIPS is skipped without it)")
    p.add_argument("--landmark-size", type=int, default=256,
                   help="frames are resized to this square size for FaceMesh; LMD is in its pixels")
    p.add_argument("--max-frames", type=int, help="score only the first N held-out frames")
    p.add_argument("--reference-seconds", type=float, default=60.0,
                   help="with --audio: seconds of the real video scored as the reference")
    p.add_argument("--pose", choices=("loop", "still"), default="loop", help="with --audio: head pose source")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from talksplat.eval import EvalConfig, default_out_dir, evaluate_subject

    if not args.subject.is_dir():
        raise UsageError(f"subject folder {args.subject} does not exist; run `talksplat prepare` first")
    if args.audio is not None and args.audio.is_dir():
        raise UsageError(f"--audio {args.audio} is a folder; give an audio file")
    if args.audio is not None and not args.audio.is_file():
        raise UsageError(f"audio file {args.audio} does not exist")
    config = EvalConfig(landmark_size=args.landmark_size, max_frames=args.max_frames,
                        reference_max_seconds=args.reference_seconds, lpips_weights=args.lpips_weights,
                        pose=args.pose, progress=not args.quiet)
    m = evaluate_subject(args.subject, args.run, args.audio, args.out, config, args.recipe)
    out = args.out or default_out_dir(args.subject, args.audio)
    print(f"wrote {out / 'report.md'}, {out / 'metrics.json'} and {len(m['plots'])} plots")
    if m["mode"] == "self":
        full, head, mo = m["image"]["full"], m["image"]["head"] or {}, m["motion"]
        print(f"  held-out: PSNR {_f(full['psnr'])} dB (head {_f(head.get('psnr'))} dB), SSIM {_f(full['ssim'], 4)}, "
              f"LMD {_f(mo['lmd_all_px'])} px (mouth {_f(mo['lmd_mouth_px'])} px at {mo['landmark_size']}^2)")
    eyes, mouth = m["eyes"], m["mouth_interior"]
    print(f"  blinks/min {_f(eyes['ours']['blinks_per_minute'], 1)} (real {_f(eyes['reference']['blinks_per_minute'], 1)}), "
          f"EAR p5 {_f(eyes['ours']['ear_p5'], 3)} (real {_f(eyes['reference']['ear_p5'], 3)})"
          + (f", eye-region PSNR {_f(eyes.get('psnr_eye_region'))} dB" if "psnr_eye_region" in eyes else "")
          + (f"; mouth interior PSNR {_f(mouth['psnr'])} dB" if mouth.get("psnr") is not None else "")
          + f", sharpness {_f(mouth['sharpness_ratio'], 2)} of real" + _teeth_summary(mouth.get("teeth_by_opening")))
    ours, ref = m["sync"]["ours"], m["sync"]["reference"]
    print(f"  A/V offset {_offset(ours)}; real video {_offset(ref)}; rendering {_f(m['efficiency']['render_fps'], 1)} "
          "frames/s")
    return 0


def _teeth_summary(teeth: dict | None) -> str:
    """The most open bin's teeth shares, ours when open as wide vs the real video's."""
    if not teeth or not teeth.get("bins"):
        return ""
    top = teeth["bins"][-1]
    return (f"; teeth on the most open {100 - teeth['percentiles'][-1]:g}%: {_f(top['ours_at_own_opening'])} "
            f"(real {_f(top['reference'])})")


def _f(x, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _offset(sync: dict) -> str:
    if sync["offset_frames"] is None:
        return f"n/a ({sync['reason']})"
    note = "" if sync["reliable"] else f", unreliable: {sync['reason']}"
    return f"{sync['offset_frames']} frames (confidence {sync['confidence']:.3f}{note})"
