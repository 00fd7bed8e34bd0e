"""``talksplat render SUBJECT --audio SPEECH -o OUT.mp4``: drive a trained avatar with any audio."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
from pathlib import Path

from talksplat.core.constants import DEFAULT_DEVICE, DEVICE_CHOICES
from talksplat.errors import UsageError


def register(subparsers) -> None:
    p = subparsers.add_parser("render", help="render a trained subject speaking the given audio",
                              description="Render a trained subject speaking SPEECH: H.264 MP4 (yuv420p, 25 fps) "
                                          "with the audio muxed, written atomically (docs/render.md).")
    p.add_argument("subject", type=Path, help="a prepared subject with a trained run, or a run folder")
    p.add_argument("--audio", type=Path, required=True, help="wav/mp3/flac/ogg/m4a speech (at most 600 s)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output .mp4")
    p.add_argument("--recipe", help="which run of the subject (default: its only run)")
    p.add_argument("--run", type=Path, help="run folder (default SUBJECT/runs/RECIPE)")
    p.add_argument("--pose", choices=("loop", "still", "range"), default=None,
                   help="head pose: ping-pong over the training frames (loop, default), hold one frame (still), "
                        "or ping-pong over --pose-range (range)")
    p.add_argument("--pose-range", type=_frame_range, metavar="START:END",
                   help="source frames START..END-1 of the prepared video for pose, expression and backdrop "
                        "(implies --pose range; with --pose still, holds START)")
    p.add_argument("--expression", default=None,
                   help="video: expression coefficients of the pose's source frame; neutral: the training median "
                        "(recipes may offer more, e.g. synctalkpp's generated; default: the recipe's, mostly video)")
    p.add_argument("--full-frame", action="store_true",
                   help="paste back into the original full-resolution frames (else the training-size crop)")
    p.add_argument("--preset", default="medium",
                   choices=("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow"),
                   help="x264 speed preset (veryfast: ~2x faster encoding than medium at about the same size)")
    p.add_argument("--workers", type=_workers, default=None, metavar="N",
                   help="frames rendered at once, one thread each (default: one per core the process may use, "
                        "at most 4; 1 = one frame at a time on all threads)")
    p.add_argument("--device", choices=DEVICE_CHOICES, default=DEFAULT_DEVICE,
                   help=f"where the frames render (default {DEFAULT_DEVICE}; auto: cuda when PyTorch sees a GPU, "
                        "gsplat is installed and the recipe supports it)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _workers(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of workers >= 1 (got {text!r})")
    return value


def _frame_range(text: str) -> tuple[int, int]:
    import argparse

    start, sep, stop = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(start), int(stop)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:END frame numbers, e.g. 0:250 (got {text!r})") from None


def _options(args):
    from talksplat.render.renderer import RenderOptions

    pose = args.pose or ("range" if args.pose_range is not None else "loop")
    if pose == "loop" and args.pose_range is not None:
        raise UsageError("--pose loop uses the training frames; to loop over --pose-range use --pose range")
    return RenderOptions(pose=pose, expression=args.expression or "video", full_frame=args.full_frame,
                         pose_range=args.pose_range)


@contextlib.contextmanager
def _sigterm_unwinds():
    """SIGTERM raises SystemExit, so the atomic writer removes its temporary file on `kill`."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:     # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args) -> int:
    from talksplat.render.renderer import Renderer, check_output_path, load_driving_audio, render_video

    options = _options(args)
    if args.device != "cpu":      # no GPU: refused before the audio and the avatar load
        from talksplat.engine.device import resolve_device

        resolve_device(args.device, ("cpu", "cuda"))
    if args.audio.is_dir():
        raise UsageError(f"--audio {args.audio} is a folder; give an audio file")
    if not args.audio.is_file():
        raise UsageError(f"audio file {args.audio} does not exist")
    check_output_path(args.out)
    samples = load_driving_audio(args.audio)      # bad audio fails in a second, before the model loads
    with _sigterm_unwinds():
        renderer = Renderer.open(args.subject, args.recipe, args.run, device=args.device)
        if args.expression is None:     # the recipe's default (synctalkpp: generated from the audio)
            options = dataclasses.replace(options, expression=renderer.conditioner.default_expression)
        summary = render_video(renderer, args.audio, args.out, options, progress=not args.quiet,
                               preset=args.preset, samples=samples, workers=args.workers)
    line = (f"wrote {summary['output']}: {summary['frames']} frames, {summary['seconds']:.2f} s, "
            f"{summary['size'][0]}x{summary['size'][1]}, {summary['fps']} frames/s")
    seam = summary.get("seam")
    if seam:
        line += (f"; seam |dI/dn| {seam['rendered']:.2f} vs original {seam['original']:.2f} "
                 f"(ratio {seam['ratio']}, {'no visible seam' if seam['no_visible_seam'] else 'SEAM'})")
    print(line)
    return 0
