"""``talksplat demo``: show what talksplat does on this machine, end to end, with no downloads.

Until the talking-head pipeline lands, the demo fits Gaussians to a bundled public-domain photo
(NASA portrait of Eileen Collins, shipped in scikit-image) with the differentiable CPU rasterizer.
"""

from __future__ import annotations

from pathlib import Path

from talksplat.errors import TalksplatError


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="run the end-to-end demo (a few seconds to minutes)")
    parser.add_argument("-o", "--output", type=Path, default=Path("demo_out"), help="output folder")
    parser.add_argument("--iterations", type=int, default=300)
    parser.set_defaults(func=run)


def run(args) -> int:
    from skimage import data

    from talksplat.train.image_fit import ImageFitConfig, fit_image

    if args.iterations < 1:
        raise TalksplatError("--iterations must be at least 1")
    try:
        args.output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TalksplatError(f"cannot create output folder {args.output}: {exc.strerror}; pass -o DIR") from exc
    cfg = ImageFitConfig(iterations=args.iterations)
    print(f"talksplat demo: fitting {cfg.num_gaussians} Gaussians to a {cfg.size}x{cfg.size} photo "
          f"for {cfg.iterations} iterations (about 10-30 s on 2 cores)")
    summary = fit_image(data.astronaut(), cfg, args.output)
    print(f"PSNR {summary['psnr_db']} dB after {summary['iterations']} iterations in {summary['seconds']} s "
          f"({summary['ms_per_iteration']} ms/iteration, {summary['backend']} backend)")
    print(f"wrote {args.output / 'fit.png'} (target | render) and {args.output / 'summary.json'}")
    return 0
