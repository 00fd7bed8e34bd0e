"""``talksplat pretrain SUBJECT_DIR... -o MODEL_DIR [--nproc N]``: pretrain the one-shot SDTalk model on
many identities with DistributedDataParallel (resumable).

Each SUBJECT_DIR is a prepared subject or a folder of prepared subjects (one per person). ``--nproc N``
spawns N processes on this machine (gloo on CPU); under ``torchrun`` the command is one worker of
torchrun's group, so several machines train together (docs/sdtalk.md). Re-running continues from the
newest checkpoint; settings that differ from the model folder's are refused unless ``--restart``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from talksplat.errors import UsageError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "pretrain", help="pretrain the one-shot SDTalk model on many prepared subjects (DDP, resumable)",
        description="Pretrain SDTalk on many identities (each SUBJECT_DIR a prepared subject or a folder of them). "
                    "--nproc N runs N data-parallel processes (torch.distributed, gloo on CPU); under torchrun the "
                    "command is one worker of its group. Re-running resumes from MODEL_DIR's newest checkpoint.")
    p.add_argument("subjects", type=Path, nargs="+", metavar="SUBJECT_DIR",
                   help="prepared subjects (`talksplat prepare`), or folders holding several")
    p.add_argument("-o", "--out", type=Path, required=True, metavar="MODEL_DIR", help="model folder (created)")
    p.add_argument("--nproc", type=int, default=1, help="processes on this machine (default 1; ignored under torchrun)")
    p.add_argument("--size", type=int, help="training resolution (sets `size`)")
    p.add_argument("--iters", type=int, nargs=2, metavar=("RECON", "MOTION"),
                   help="iterations of the reconstruction and motion stages")
    p.add_argument("--batch", type=int, help="samples per process and step (sets `batch_size`)")
    p.add_argument("--seed", type=int, help="random seed (sets `seed`)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="any SDTalk setting by its dotted name, e.g. --set losses.lip=2 (repeatable)")
    p.add_argument("--config", type=Path, metavar="FILE", help="settings from a JSON or TOML file")
    p.add_argument("--threads", type=int, help="torch threads per process (default: cores / processes)")
    p.add_argument("--restart", action="store_true", help="discard MODEL_DIR's checkpoints and start over")
    p.add_argument("--stop-after", type=int, metavar="STEP", help="stop after this global step (resume later)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def settings(args: argparse.Namespace):
    """The SDTalk config from the defaults, --config, the shortcuts and --set (later ones win)."""
    from talksplat.engine.config import apply_overrides, overrides_from_file
    from talksplat.recipes.sdtalk import SDTalkConfig, check_config

    overrides: dict[str, object] = {}
    if args.config is not None:
        overrides.update(overrides_from_file(args.config))
    shortcuts = {"size": args.size, "seed": args.seed, "batch_size": args.batch}
    overrides.update({k: v for k, v in shortcuts.items() if v is not None})
    if args.iters:
        overrides.update({"iterations.reconstruction": args.iters[0], "iterations.motion": args.iters[1]})
    for item in args.settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set needs KEY=VALUE (got {item!r})")
        overrides[key.strip()] = value
    cfg = apply_overrides(SDTalkConfig(), overrides)
    check_config(cfg)
    return cfg


def check_resume(out: Path, cfg, restart: bool) -> None:
    """Refuses a model folder trained with other settings (listing them) unless ``--restart``."""
    from talksplat.engine.checkpoint import newest_readable_meta
    from talksplat.engine.config import config_from_dict, differences
    from talksplat.engine.distributed import CHECKPOINTS
    from talksplat.errors import TalksplatError
    from talksplat.recipes.sdtalk import NAME, SDTalkConfig

    if restart and out.exists():
        for name in (CHECKPOINTS, "log.jsonl", "summary.json", "config.json"):
            target = out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        return
    meta = newest_readable_meta(out / CHECKPOINTS)
    if meta is None:
        return
    if meta["recipe"] != NAME:
        raise UsageError(f"{out} holds a {meta['recipe']!r} run, not sdtalk; choose another -o folder")
    try:
        saved = config_from_dict(SDTalkConfig, meta["config"])
    except TalksplatError as exc:
        raise UsageError(f"{out}'s checkpoint settings are unreadable ({exc}); pass --restart") from exc
    changed = differences(saved, cfg)
    if changed:
        listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changed[:4])
        raise UsageError(f"{out} was pretrained with other settings ({listed}); re-run with the same settings "
                         "to resume, --restart to start over, or another -o folder")


def add_sample_counts(out: Path, summary: dict, identities, seed: int) -> dict:
    """Adds each identity's number of training samples (``samples``) to its entry in ``summary.json``,
    recomputed from the step-indexed sampler (nothing is logged per draw): the sampler is uniform over
    prepared subjects, so a person with several clips gets more."""
    from talksplat.engine.distributed import SUMMARY_JSON
    from talksplat.recipes.sdtalk import samples_per_identity

    counts = samples_per_identity(identities, seed, summary["steps"], summary["global_batch"])
    summary = {**summary, "identities": [{**entry, "samples": n} for entry, n in zip(summary["identities"], counts)]}
    (out / SUMMARY_JSON).write_text(json.dumps(summary, indent=1))
    return summary


def run(args: argparse.Namespace) -> int:
    from talksplat.engine.distributed import LaunchSpec, launch, launched_by_torchrun
    from talksplat.recipes.sdtalk import NAME, build_job, load_identities

    if args.nproc < 1:
        raise UsageError("--nproc must be >= 1")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be >= 1")
    if args.stop_after is not None and args.stop_after < 1:
        raise UsageError("--stop-after must be >= 1")
    for folder in args.subjects:
        if not folder.is_dir():
            raise UsageError(f"{folder} is not a folder; give prepared subjects (`talksplat prepare VIDEO -o DIR`)")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"{args.out} exists and is not a folder; choose another -o")
    cfg = settings(args)
    # Checked here, in one process, so bad data is one line rather than one traceback per worker.
    identities = load_identities(args.subjects, cfg)
    world = int(os.environ.get("WORLD_SIZE", args.nproc)) if launched_by_torchrun() else args.nproc
    if not launched_by_torchrun() or int(os.environ.get("RANK", "0")) == 0:
        check_resume(args.out, cfg, args.restart)
    frames = sum(len(s.train_frames) for s in identities.collection.subjects)
    if not args.quiet:
        print(f"pretrain: {len(identities)} identities, {frames} training frames, {world} process(es) x batch "
              f"{cfg.batch_size}, size {cfg.size}")
    spec = LaunchSpec(build=build_job, subject_dirs=[str(p) for p in args.subjects], config=cfg, recipe=NAME,
                      out_dir=str(args.out), batch_size=cfg.batch_size, checkpoint_every=cfg.checkpoint_every,
                      threads=args.threads, quiet=args.quiet, stop_after=args.stop_after)
    summary = launch(spec, args.nproc)
    if summary:
        summary = add_sample_counts(args.out, summary, identities, cfg.seed)
    if summary and not args.quiet:
        print(f"pretrain: {summary['steps']} steps, {summary['samples_per_second']} samples/s "
              f"({summary['processes']} x {summary['threads_per_process']} threads), "
              f"final losses {json.dumps(summary['final_losses_last10'])}")
        print("  samples per identity " + ", ".join(f"{s['name']} {s['samples']}" for s in summary["identities"]))
        print(f"  model      {args.out}\n  summary    {args.out / 'summary.json'}")
    elif not args.quiet:
        print(f"pretrain: stopped; re-run the same command to resume from {args.out}")
    return 0
