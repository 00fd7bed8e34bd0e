"""``talksplat oneshot IMAGE --audio SPEECH -o OUT.mp4 --model MODEL_DIR [--pose still|VIDEO]``: a talking
video of the face in one image, from a model made by ``talksplat pretrain``.

The image is tracked and fitted like one prepared frame (a still clip through ``talksplat prepare``,
cached in ``--work``); the output is the crop at the model's size with the speech muxed, plus
``OUT.json`` (frames, render FPS, the checkpoint, the pose source).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from talksplat.errors import TalksplatError, UsageError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "oneshot", help="a talking video of the face in one image, with a pretrained SDTalk model",
        description="Render IMAGE speaking SPEECH with a model from `talksplat pretrain`. The image is tracked and "
                    "fitted like one prepared frame (cached in --work); --pose still keeps its head still, --pose "
                    "VIDEO (or a prepared subject folder) moves it like the video's head.")
    p.add_argument("image", type=Path, help="PNG/JPEG of one face")
    p.add_argument("--audio", type=Path, required=True, help="driving speech (wav/flac/ogg/mp3/mp4...)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output .mp4")
    p.add_argument("--model", type=Path, required=True, metavar="MODEL_DIR", help="folder written by `talksplat pretrain`")
    p.add_argument("--pose", default="still", help="still (default), a video, or a prepared subject folder")
    p.add_argument("--work", type=Path, help="folder for the prepared image and pose video (default OUT.oneshot/)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def driver_cameras(pose: str, work: Path, size: int, quiet: bool):
    """The driver's cameras (T, 4, 4), or None for ``still``."""
    if pose == "still":
        return None
    import torch

    from talksplat.io.paths import require_file
    from talksplat.prepare.layout import load_subject
    from talksplat.recipes.sdtalk_oneshot import MIN_PREPARE_SIZE

    path = Path(pose)
    if path.is_dir():
        if not (path / "subject.json").is_file():
            raise UsageError(f"--pose {path} is a folder but not a prepared subject; give still, a video, or a "
                             "folder written by `talksplat prepare`")
        subject = path
    else:
        require_file(path, "pose video", "--pose ")
        from talksplat.prepare import PrepareConfig, prepare

        subject = work / "pose"
        prepare(path, subject, PrepareConfig(size=max(size, MIN_PREPARE_SIZE), audio=False), quiet=quiet)
    return torch.as_tensor(load_subject(subject)["w2c"], dtype=torch.float32)


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from talksplat.core.constants import FPS, SAMPLE_RATE
    from talksplat.features.audio import fit_to_frames
    from talksplat.features.registry import AudioFeatures
    from talksplat.io.video import VideoWriter
    from talksplat.recipes import sdtalk_oneshot as one
    from talksplat.render.renderer import check_output_path, load_driving_audio, output_frame_count

    check_output_path(args.out)
    if not args.model.is_dir():
        raise UsageError(f"--model {args.model} is not a folder; give the -o folder of `talksplat pretrain`")
    image = one.read_image(args.image)
    samples = load_driving_audio(args.audio)
    loaded = one.load_model(args.model)
    cfg = loaded.config
    work = args.work or args.out.with_suffix(".oneshot")
    subject = one.prepare_still(image, work, cfg.size, quiet=args.quiet)
    source = one.source_from_subject(subject, 0, cfg)
    n_frames = output_frame_count(len(samples))
    audio = torch.from_numpy(AudioFeatures(cfg.audio_feature).compute_samples(samples, n_frames)).float()
    if audio.ndim == 2:
        audio = audio[:, None, :]
    cameras = one.driven_cameras(source.w2c, driver_cameras(args.pose, work, cfg.size, args.quiet), n_frames)
    start = time.perf_counter()
    render_seconds = 0.0
    try:
        with VideoWriter(args.out, cfg.size, cfg.size, fps=FPS, audio=fit_to_frames(samples, n_frames),
                         sample_rate=SAMPLE_RATE) as writer:
            frames = one.render_frames(loaded.model, source, audio, cameras)
            for _ in tqdm(range(n_frames), desc="oneshot", unit="frame", disable=args.quiet):
                tick = time.perf_counter()
                frame = next(frames)
                render_seconds += time.perf_counter() - tick
                writer.write(frame)
    except OSError as exc:
        raise TalksplatError(f"writing {args.out} failed ({exc}); nothing was written") from exc
    summary = {"output": str(args.out), "frames": n_frames, "size": cfg.size, "pose": args.pose,
               "render_fps": round(n_frames / render_seconds, 2) if render_seconds > 0 else None,
               "total_seconds": round(time.perf_counter() - start, 2), "threads": torch.get_num_threads(),
               "model": str(args.model), "checkpoint_step": loaded.step, "prepared_image": str(subject)}
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    if not args.quiet:
        print(f"oneshot: {n_frames} frames at {cfg.size}x{cfg.size}, {summary['render_fps']} frames/s rendering "
              f"(checkpoint step {loaded.step})\n  video      {args.out}\n  summary    {args.out.with_suffix('.json')}")
    return 0
