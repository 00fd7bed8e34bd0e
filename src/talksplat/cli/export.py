"""``talksplat export RUN -o head.ply``: a trained avatar's canonical Gaussians as a standard 3DGS PLY."""

from __future__ import annotations

from pathlib import Path

from talksplat import errors
from talksplat.errors import TalksplatError

# Exit code 2 for a bad command line (errors.UsageError; plain TalksplatError where it does not exist yet).
UsageError = getattr(errors, "UsageError", TalksplatError)


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="write a trained avatar's Gaussians as a 3DGS .ply",
                              description="Write the undeformed (canonical) Gaussians of a trained avatar as a "
                                          "standard 3D Gaussian Splatting PLY (x y z, nx ny nz, f_dc_0..2, "
                                          "opacity logit, log scale_0..2, rot_0..3) that splat viewers open.")
    p.add_argument("run", type=Path, metavar="RUN_OR_SUBJECT", help="a trained subject or a run folder")
    p.add_argument("-o", "--out", type=Path, required=True, help="output .ply")
    p.add_argument("--set", dest="sets", action="append", metavar="NAME",
                   help="only this Gaussian set (repeatable; default: every set, e.g. face and mouth)")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from talksplat.recipes import load_avatar
    from talksplat.serve.ply import write_ply

    out = Path(args.out)
    if out.suffix.lower() != ".ply":
        raise UsageError(f"output must be a .ply file, got {out}")
    if not out.parent.is_dir():
        raise UsageError(f"output folder {out.parent} does not exist; create it first")
    avatar = load_avatar(args.run)
    sets = avatar.canonical_gaussians()
    chosen = args.sets or list(sets)
    unknown = [name for name in chosen if name not in sets]
    if unknown:
        raise UsageError(f"no Gaussian set {', '.join(unknown)}; this avatar has {', '.join(sets)}")
    merged = {key: torch.cat([sets[name][key] for name in chosen]) for key in sets[chosen[0]]}
    count = write_ply(out, merged)
    counts = ", ".join(f"{name}: {len(sets[name]['means'])}" for name in chosen)
    print(f"wrote {count} Gaussians ({counts}) to {out}")
    return 0
