"""``talksplat train SUBJECT_DIR``: train an avatar on a prepared subject (resumes automatically)."""

from __future__ import annotations

from pathlib import Path

from talksplat.errors import TalksplatError

QUALITY_PRESETS = {
    # CPU defaults: about 15-30 min on 2 cores at 256^2.
    "default": {"size": 256, "static": 1500, "motion": 3000, "finetune": 500},
    "high": {"size": 512, "static": 4000, "motion": 10000, "finetune": 2000},
    "draft": {"size": 128, "static": 300, "motion": 600, "finetune": 100},
}


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train an avatar on a prepared subject (resumable)")
    p.add_argument("subject", type=Path, help="folder written by `talksplat prepare`")
    p.add_argument("--recipe", default="talkinggaussian")
    p.add_argument("--quality", choices=sorted(QUALITY_PRESETS), default="default")
    p.add_argument("--size", type=int, help="training resolution (overrides --quality)")
    p.add_argument("--iters", type=int, nargs=3, metavar=("STATIC", "MOTION", "FINETUNE"),
                   help="iterations per stage (overrides --quality)")
    p.add_argument("-o", "--out", type=Path, help="run folder (default SUBJECT/runs/RECIPE)")
    p.add_argument("--restart", action="store_true", help="ignore existing checkpoints")
    p.add_argument("--no-decomposition", action="store_true", help="ablation: one branch, no mouth branch")
    p.add_argument("--no-incremental-sampling", action="store_true", help="ablation: uniform frame sampling")
    p.add_argument("--appearance-modification", action="store_true",
                   help="ablation: predict colour/opacity offsets instead of deformation")
    p.add_argument("--audio-condition", choices=("lipstate", "learned"), default="lipstate",
                   help="lipstate: audio -> predicted lip shape -> motion (default); learned: the paper's "
                        "AudioNet on raw log-mel, trained end to end (memorises short clips)")
    p.add_argument("--mouth-loss-weight", type=float, help="weight of the extra mouth-box L1 (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=float, default=120.0, help="seconds between checkpoints")
    p.add_argument("--eval-frames", type=int, default=8, help="held-out frames scored after each stage")
    p.set_defaults(func=run)


def build_config(args):
    from talksplat.train.trainer import recipe_classes

    _, cfg_cls = recipe_classes(args.recipe)
    preset = QUALITY_PRESETS[args.quality]
    cfg = cfg_cls(size=args.size or preset["size"], seed=args.seed,
                  decomposition=not args.no_decomposition,
                  incremental_sampling=not args.no_incremental_sampling,
                  appearance_modification=args.appearance_modification,
                  audio_condition=args.audio_condition)
    if args.mouth_loss_weight is not None:
        cfg.mouth_loss_weight = args.mouth_loss_weight
    static, motion, finetune = args.iters or (preset["static"], preset["motion"], preset["finetune"])
    cfg.iterations.static, cfg.iterations.motion, cfg.iterations.finetune = static, motion, finetune
    try:
        cfg.validate()
    except ValueError as exc:
        raise TalksplatError(str(exc)) from exc
    return cfg


def run(args) -> int:
    from talksplat.train.trainer import TrainerConfig, train

    if not args.subject.is_dir():
        raise TalksplatError(f"subject folder {args.subject} does not exist; run `talksplat prepare` first")
    summary = train(args.subject, args.recipe, build_config(args), TrainerConfig(checkpoint_every_s=args.checkpoint_every,
                                                                           eval_frames=args.eval_frames),
                    out_dir=args.out, resume=not args.restart)
    scores = summary["held_out_by_stage"]
    speed = f"{summary['ms_per_iteration_median']} ms/it, " if summary["ms_per_iteration_median"] else ""
    print(f"trained {summary['recipe']} in {summary['train_seconds']:.0f} s ({speed}{summary['gaussians']} Gaussians)")
    for stage, s in scores.items():
        head = f", head box {s['psnr_head_box']:.2f} dB" if s.get("psnr_head_box") else ""
        lips = s.get("mouth_opening_corr")
        lips = f", mouth-opening r {lips:.2f}" if lips is not None else ""
        print(f"  held-out after {stage}: PSNR {s['psnr']:.2f} dB{head}, SSIM {s['ssim']:.4f}{lips} "
              f"({s['frames']} frames)")
    return 0
