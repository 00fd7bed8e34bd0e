"""``talksplat sync-train``: train the audio-visual sync encoder on one or several subjects."""

from __future__ import annotations

import argparse
from pathlib import Path

from talksplat.errors import UsageError
from talksplat.io.paths import require_file


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sync-train", help="train the audio-visual sync encoder (lip-sync features and scorer) on a CPU",
        description="Self-supervised training of the SyncTalk++ sync encoder on talking-head videos (lip "
                    "landmarks vs log-mel). Each subject's audio-video offset is estimated first and corrected "
                    "when confident. Writes OUT_DIR/sync_encoder.safetensors + sync_encoder.json.")
    parser.add_argument("out_dir", type=Path, help="output folder for the model")
    parser.add_argument("--video", type=Path, action="append", default=[],
                        help="a talking-head video with audio (repeat for several subjects)")
    parser.add_argument("--subject", type=Path, action="append", default=[],
                        help="a folder made by talksplat prepare (repeatable)")
    parser.add_argument("--landmarks", type=Path, action="append", default=[],
                        help="(T, 478|40, 2|3) landmarks .npy at 25 fps; pair each with an --audio")
    parser.add_argument("--audio", type=Path, action="append", default=[],
                        help="the audio (or video) file of the matching --landmarks")
    parser.add_argument("--minutes", type=float, default=3.0, help="training time budget (default 3)")
    parser.add_argument("--steps", type=int, default=100_000, help="maximum training steps")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-offset-correction", action="store_true",
                        help="train on the clips as they are (do not shift audio by the estimated offset)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def _load_clips(args: argparse.Namespace) -> list[tuple[str, object, object]]:
    """[(name, lip landmarks (T, K, 2), 16 kHz audio (N,)), ...] from every input option."""
    from talksplat.features.audio import load_audio_16k
    from talksplat.features.sync_model import lip_points, prepared_lips_audio, track_video_lips

    if len(args.landmarks) != len(args.audio):
        raise UsageError("give one --audio for each --landmarks")
    inputs = []
    for video in args.video:
        require_file(video, "video", "--video ")
        inputs.append((video.stem, track_video_lips(video, progress=not args.quiet), load_audio_16k(video)))
    for subject in args.subject:
        inputs.append((subject.name, *prepared_lips_audio(subject)))
    for landmarks, audio in zip(args.landmarks, args.audio, strict=True):
        inputs.append((landmarks.stem, lip_points(_load_npy(landmarks)), load_audio_16k(audio)))
    if not inputs:
        raise UsageError("nothing to train on: give --video, --subject or --landmarks/--audio")
    return inputs


def _load_npy(path: Path):
    import numpy as np

    require_file(path, "landmarks (.npy)", "--landmarks ")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise UsageError(f"{path} is not a numpy array file ({exc})") from exc


def run(args: argparse.Namespace) -> int:
    from talksplat.features.sync import (
        SyncTrainConfig,
        estimate_offset,
        make_clip,
        shift_audio,
        train_sync_encoder,
    )

    if args.minutes <= 0 or args.steps <= 0 or args.threads <= 0:
        raise UsageError("--minutes, --steps and --threads must be positive")
    clips = []
    for name, lips, audio in _load_clips(args):
        if not args.no_offset_correction:
            est = estimate_offset(lips, audio)
            action = "corrected" if est.reliable and est.offset_frames else "left as is"
            print(f"sync-train: {name}: audio-video offset {est.offset_frames:+d} frames "
                  f"(confidence {est.confidence:.3f}, {'reliable' if est.reliable else 'not reliable'}), "
                  f"{action}{'; ' + est.reason if est.reason else ''}")
            if est.reliable:
                audio = shift_audio(audio, est.offset_frames)
        clips.append(make_clip(lips, audio, name))
    cfg = SyncTrainConfig(minutes=args.minutes, max_steps=args.steps, threads=args.threads, seed=args.seed)
    result = train_sync_encoder(clips, cfg, args.out_dir, progress=not args.quiet)
    print(f"sync-train: {result.steps} steps in {result.seconds:.1f} s, loss {result.final_loss:.3f}, "
          f"training shift accuracy {result.shift_accuracy:.2f}")
    print(f"  model         {args.out_dir}")
    return 0
