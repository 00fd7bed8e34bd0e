"""``talksplat prepare``: turn a raw talking video into a training set."""

from __future__ import annotations

import argparse
from pathlib import Path

from talksplat.core.constants import FPS


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare", help="turn a talking video into a training set (tracking, cameras, masks, expressions)",
        description="Decode VIDEO, resample to --fps, track the face (MediaPipe), fit stabilised per-frame "
                    "cameras, build masks, a background plate, expression signals and audio features, and "
                    "write a versioned dataset to SUBJECT_DIR (docs/dataset.md). Re-running skips finished steps.")
    parser.add_argument("video", type=Path, help="input video (mp4/mov/mkv/webm/avi, any fps/size)")
    parser.add_argument("-o", "--out", dest="out_dir", type=Path, required=True, help="subject folder (created)")
    parser.add_argument("--size", type=int, default=512, help="side of the square crop images (default 512)")
    parser.add_argument("--fps", type=int, default=FPS, help=f"dataset frame rate (default {FPS})")
    parser.add_argument("--no-audio", action="store_true", help="accept a video without sound (no audio features)")
    parser.add_argument("--no-offset-correction", action="store_true",
                        help="report the audio/video offset but do not shift the audio")
    parser.add_argument("--no-stabilise", action="store_true",
                        help="keep the per-frame landmark poses (skip the optical-flow bundle adjustment)")
    parser.add_argument("--force", action="store_true",
                        help="redo every step even if it is up to date; also needed to replace the dataset of a "
                             "subject that has trained runs with another video's")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from talksplat.prepare import PrepareConfig, prepare

    cfg = PrepareConfig(size=args.size, fps=args.fps, audio=not args.no_audio,
                        offset_correction=not args.no_offset_correction, stabilise=not args.no_stabilise)
    result = prepare(args.video, args.out_dir, cfg, quiet=args.quiet, force=args.force)
    s = result.summary
    print(f"prepare: {result.n_frames} frames at {cfg.fps} fps, {cfg.size}x{cfg.size}, "
          f"detection {100 * s['detection_rate']:.1f}%, focal {s['focal_px']:.0f} px, "
          f"reprojection {s['reprojection_error_px']:.2f} px, jitter {s['jitter_raw_deg']:.3f} -> "
          f"{s['jitter_deg']:.3f} deg, in {result.seconds:.1f} s "
          f"(ran: {', '.join(result.ran) or 'nothing'})")
    print(f"  subject     {result.subject_dir / 'subject.json'}")
    print(f"  report      {result.subject_dir / 'report'}")
    return 0
