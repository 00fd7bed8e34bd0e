"""``talksplat synth``: render a synthetic speaking subject with exact ground truth."""

from __future__ import annotations

import argparse
from pathlib import Path

from talksplat.errors import UsageError
from talksplat.io.paths import require_file


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "synth", help="generate a synthetic talking-head video with ground truth (offline)",
        description="Render a photoreal-looking person speaking (MP4 with audio) plus ground_truth.json/.npz "
                    "(camera, head pose, mouth opening, blinks, brows, masks). Deterministic for a seed.")
    parser.add_argument("out_dir", type=Path, help="output folder (created; existing outputs are replaced)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="video length in seconds (default 20; with --audio, the audio's length)")
    parser.add_argument("--size", type=int, default=256, help="square frame size in pixels (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--audio", type=Path, default=None,
                        help="driving speech (wav/flac/ogg/mp3/m4a/mp4...); default: the bundled LibriSpeech clips, "
                             "looped or trimmed to --seconds")
    parser.add_argument("--tiny", action="store_true", help="quick test clip: 128 px, 3.2 s (or --seconds); overrides --size")
    parser.add_argument("--no-phones", action="store_true",
                        help="drive the mouth from loudness only (skip pocketsphinx phone decoding)")
    parser.add_argument("--no-masks", action="store_true", help="leave label maps and masks out of ground_truth.npz")
    parser.add_argument("--crf", type=int, default=18, help="x264 quality, lower is better (default 18)")
    parser.add_argument("--sheet", action="store_true",
                        help="also write OUT_DIR/contact_sheet.png (key frames, labels, mouth vs loudness)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from talksplat.synthetic import SynthConfig, generate

    if args.audio is not None:
        require_file(args.audio, "audio", "--audio ")
    if args.seed < 0:
        raise UsageError("--seed must be >= 0")
    if not 0 <= args.crf <= 51:
        raise UsageError("--crf must be between 0 and 51")
    seconds = args.seconds
    if seconds is None and args.audio is None:
        seconds = 20.0
    cfg = SynthConfig(seconds=seconds, size=args.size, seed=args.seed,
                      audio=str(args.audio) if args.audio is not None else None,
                      use_phones=not args.no_phones, masks=not args.no_masks, crf=args.crf)
    if args.tiny:
        cfg = cfg.replace(size=128, seconds=3.2 if args.seconds is None else args.seconds)
    if args.out_dir.exists() and not args.out_dir.is_dir():
        raise UsageError(f"{args.out_dir} exists and is not a folder")
    result = generate(cfg, args.out_dir, progress=not args.quiet)
    print(f"synth: {result.num_frames} frames, {result.duration:.2f} s at {cfg.fps} fps, "
          f"{cfg.size}x{cfg.size}, seed {cfg.seed}, in {result.seconds_taken:.1f} s")
    outputs = [("video", result.video), ("audio", result.audio),
               ("ground truth", result.ground_truth_json), ("arrays", result.ground_truth_npz)]
    if args.sheet:
        from talksplat.synthetic.preview import contact_sheet

        outputs.append(("contact sheet", contact_sheet(result.out_dir)))
    for label, path in outputs:
        print(f"  {label:<14}{path}")
    return 0
