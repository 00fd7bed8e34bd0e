"""``talksplat demo``: show what talksplat does, end to end, on this machine, with no downloads.

By default: make a synthetic speaking subject, prepare it, train a TalkingGaussian avatar briefly,
and render it speaking a bundled clip it never heard (``talking.mp4``), plus held-out frames next to
the truth (``side_by_side.mp4``) and ``summary.json``. ``--engine-only`` instead fits Gaussians to a
bundled public-domain photo in seconds (a smoke test of the rasterizer).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from talksplat.errors import TalksplatError, UsageError


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="run the end-to-end demo (5-10 minutes on 2 cores)")
    parser.add_argument("-o", "--output", type=Path, default=Path("demo_out"), help="output folder")
    parser.add_argument("--engine-only", action="store_true",
                        help="only fit Gaussians to a photo (seconds): checks the rasterizer works")
    parser.add_argument("--iterations", type=int, default=300, help="iterations of --engine-only")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # seconds-scale, for tests
    parser.set_defaults(func=run)


def _make_output(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TalksplatError(f"cannot create output folder {folder}: {exc.strerror}; pass -o DIR") from exc


def run(args) -> int:
    if args.iterations < 1:
        raise UsageError("--iterations must be at least 1")
    _make_output(args.output)
    return run_engine_demo(args) if args.engine_only else run_full_demo(args)


def run_full_demo(args) -> int:
    from talksplat.demo import DemoConfig, run_demo

    cfg = DemoConfig.tiny() if args.tiny else DemoConfig()
    minutes = cfg.estimated_minutes()
    print(f"talksplat demo: synthetic subject -> prepare -> train -> render, about {minutes:.0f} minutes on "
          f"2 idle cores (up to {2 * minutes:.0f} on a busy machine). Re-running resumes where it stopped.")
    result = run_demo(args.output, cfg, quiet=args.quiet)
    held = result["held_out"].get("finetune", {})
    lips = held.get("mouth_opening_corr")
    lips = f", mouth-opening correlation {lips:.2f}" if lips is not None else ""
    print(f"done in {result['total_seconds']:.0f} s: held-out PSNR {held.get('psnr', float('nan')):.2f} dB "
          f"(head box {held.get('psnr_head_box') or float('nan'):.2f} dB{lips})")
    for name in ("talking.mp4", "side_by_side.mp4", "summary.json"):
        print(f"  {args.output / name}")
    return 0


def run_engine_demo(args) -> int:
    from skimage import data

    from talksplat.engine.image_fit import ImageFitConfig, fit_image

    cfg = ImageFitConfig(iterations=args.iterations)
    print(f"talksplat demo --engine-only: fitting {cfg.num_gaussians} Gaussians to a {cfg.size}x{cfg.size} photo "
          f"for {cfg.iterations} iterations (about 10-30 s on 2 cores)")
    summary = fit_image(data.astronaut(), cfg, args.output)
    print(f"PSNR {summary['psnr_db']} dB after {summary['iterations']} iterations in {summary['seconds']} s "
          f"({summary['ms_per_iteration']} ms/iteration, {summary['backend']} backend)")
    print(f"wrote {args.output / 'fit.png'} (target | render) and {args.output / 'summary.json'}")
    return 0
