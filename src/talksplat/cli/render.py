"""``talksplat render SUBJECT --audio SPEECH -o OUT.mp4``: drive a trained avatar with any audio."""

from __future__ import annotations

from pathlib import Path

from talksplat.errors import TalksplatError


def register(subparsers) -> None:
    p = subparsers.add_parser("render", help="render a trained subject speaking the given audio")
    p.add_argument("subject", type=Path)
    p.add_argument("--audio", type=Path, required=True, help="wav/mp3/flac/ogg/m4a speech")
    p.add_argument("-o", "--out", type=Path, required=True, help="output .mp4")
    p.add_argument("--recipe", default="talkinggaussian")
    p.add_argument("--run", type=Path, help="run folder (default SUBJECT/runs/RECIPE)")
    p.add_argument("--pose", choices=("loop", "still"), default="loop")
    p.add_argument("--expression", choices=("video", "neutral"), default="video")
    p.add_argument("--full-frame", action="store_true", help="paste back into the original full frames")
    p.set_defaults(func=run)


def run(args) -> int:
    from talksplat.render.renderer import Renderer, RenderOptions, render_video

    if not args.audio.is_file():
        raise TalksplatError(f"audio file {args.audio} does not exist")
    if args.out.suffix.lower() != ".mp4":
        raise TalksplatError(f"output must be an .mp4 file, got {args.out}")
    if not args.out.parent.exists():
        raise TalksplatError(f"output folder {args.out.parent} does not exist; create it first")
    renderer = Renderer(args.subject, args.run, args.recipe)
    summary = render_video(renderer, args.audio, args.out,
                           RenderOptions(pose=args.pose, expression=args.expression, full_frame=args.full_frame))
    print(f"wrote {summary['output']}: {summary['frames']} frames, {summary['seconds']:.2f} s, "
          f"{summary['size'][0]}x{summary['size'][1]}")
    return 0
