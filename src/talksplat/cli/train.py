"""``talksplat train SUBJECT_DIR [--recipe NAME]``: train an avatar on a prepared subject (resumable).

Settings: ``--quality`` (the recipe's presets), the common shortcuts ``--size``, ``--iters``, ``--seed``,
``--audio-feature``, and any config field by its dotted name with ``--set KEY=VALUE`` (repeatable) or
``--config FILE`` (JSON/TOML); later ones win: preset < file < shortcuts < --set. Re-running without
settings resumes the run; settings that differ from the run's are refused unless ``--restart``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from talksplat.core.constants import DEFAULT_DEVICE, DEVICE_CHOICES
from talksplat.errors import UsageError

QUALITIES = ("draft", "default", "high")
DEFAULT_RECIPE = "talkinggaussian"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train an avatar on a prepared subject (resumable)",
        description="Train an avatar on a prepared subject. Re-running continues the run from its newest "
                    "checkpoint; settings that differ from the run's are refused unless --restart.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    # The settings list needs the recipes (torch and all): built only when help is shown, so other
    # commands start without importing them.
    plain_format_help = p.format_help

    def format_help() -> str:
        p.epilog = _settings_epilog()
        return plain_format_help()

    p.format_help = format_help
    p.add_argument("subject", type=Path, help="folder written by `talksplat prepare`")
    p.add_argument("--recipe", default=DEFAULT_RECIPE, help=f"the method to train (default {DEFAULT_RECIPE}; "
                   "`talksplat recipes` lists them)")
    p.add_argument("--quality", choices=QUALITIES, help="a preset of the recipe (`talksplat recipes NAME` shows "
                   "them; default: the recipe's defaults)")
    p.add_argument("--size", type=int, help="training resolution (sets `size`)")
    p.add_argument("--iters", type=int, nargs="+", metavar="N",
                   help="iterations per stage, one number per stage in order (sets `iterations.*`)")
    p.add_argument("--seed", type=int, help="random seed (sets `seed`)")
    p.add_argument("--audio-feature", help="mel | phones | mel+phones | avsync[:DIR] | wav2vec2:DIR | hubert:DIR "
                   "(sets `audio_feature`; computed and cached when prepare did not write it)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="any config field by its dotted name, e.g. --set losses.mouth_box=0 (repeatable)")
    p.add_argument("--config", type=Path, metavar="FILE", help="settings from a JSON or TOML file "
                   "(the nesting of config.json)")
    p.add_argument("-o", "--out", type=Path, help="run folder (default SUBJECT/runs/RECIPE)")
    p.add_argument("--restart", action="store_true", help="discard the run's checkpoints and start over")
    p.add_argument("--checkpoint-every", type=float, default=120.0, help="seconds between checkpoints")
    p.add_argument("--eval-frames", type=int, default=8, help="held-out frames scored after each stage")
    p.add_argument("--device", choices=DEVICE_CHOICES, default=DEFAULT_DEVICE,
                   help=f"where the steps run (default {DEFAULT_DEVICE}; auto: cuda when PyTorch sees a GPU, gsplat "
                        "is installed and the recipe supports it; docs/training.md)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _settings_epilog() -> str:
    from talksplat.engine.config import describe_fields
    from talksplat.recipes import RECIPES

    lines = ["config fields (KEY = default) for --set / --config:"]
    for name, cls in sorted(RECIPES.items()):
        lines.append(f"  {name}:")
        lines += [f"    {line}" for line in describe_fields(cls.Config())]
    return "\n".join(lines)


def requested_overrides(args, recipe_cls) -> dict[str, object]:
    """Dotted-name settings the command line asks for (empty: none were given)."""
    from talksplat.engine.config import overrides_from_file

    overrides: dict[str, object] = {}
    if args.quality:
        overrides.update(getattr(recipe_cls, "presets", {}).get(args.quality, {}))
    if args.config:
        overrides.update(overrides_from_file(args.config))
    overrides.update(_shortcuts(args, recipe_cls))
    for item in args.settings:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects KEY=VALUE (got {item!r})")
        overrides[key.strip()] = value.strip()
    return overrides


def _shortcuts(args, recipe_cls) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in (("size", args.size), ("seed", args.seed), ("audio_feature", args.audio_feature)):
        if value is not None:
            out[key] = value
    if args.iters is not None:
        stage_names = list(recipe_cls.Config().iterations.__dataclass_fields__)
        if len(args.iters) != len(stage_names):
            raise UsageError(f"--iters needs {len(stage_names)} numbers for {recipe_cls.name} "
                             f"({' '.join(n.upper() for n in stage_names)}), got {len(args.iters)}")
        if any(n < 0 for n in args.iters):
            raise UsageError("--iters must be >= 0")
        out.update({f"iterations.{name}": n for name, n in zip(stage_names, args.iters, strict=True)})
    return out


def build_config(args, recipe_cls):
    """The requested config, or None when no setting was given (resume as is / defaults)."""
    from talksplat.engine.config import apply_overrides

    overrides = requested_overrides(args, recipe_cls)
    if not overrides:
        return None
    cfg = apply_overrides(recipe_cls.Config(), overrides)
    try:
        cfg.validate()
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return cfg


def run(args) -> int:
    from talksplat.engine.trainer import TrainerConfig, train
    from talksplat.recipes import recipe_class

    recipe_cls = recipe_class(args.recipe)
    if not args.subject.is_dir():
        raise UsageError(f"subject folder {args.subject} does not exist; run `talksplat prepare` first")
    if not (args.subject / "subject.json").is_file():
        raise UsageError(f"{args.subject} is not a prepared subject (no subject.json); "
                         f"run `talksplat prepare VIDEO -o {args.subject}` first")
    if args.eval_frames < 0 or args.checkpoint_every < 0:
        raise UsageError("--eval-frames and --checkpoint-every must be >= 0")
    cfg = build_config(args, recipe_cls)
    trainer_cfg = TrainerConfig(checkpoint_every_s=args.checkpoint_every, eval_frames=args.eval_frames,
                                quiet=args.quiet, device=args.device)
    summary = train(args.subject, recipe_cls, cfg, trainer_cfg, out_dir=args.out, restart=args.restart)
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
