"""FlameTalk with and without its linear prior, on an already trained GaussianFlameTalk run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/flametalk_prior.py SUBJECT_DIR RUN_DIR \
        [--steps 1000] [--name NAME] [--out-root DIR]

The avatar (Gaussians, mesh) stays as trained; only FlameTalk, which drives the mouth, changes. Each
variant is scored by ``talksplat eval`` on the held-out frames (PSNR, LMD, lip-opening r from
FaceMesh on the rendered video):

- ``as_trained``: the run's own FlameTalk (whatever its config says);
- ``prior_only``: the linear prior alone (a ridge map from each frame's audio window to the tracked
  jaw/mouth weights, ``FlameTalk.fit_prior``), the transformer's output zero;
- ``prior_and_transformer``: the prior plus the transformer trained on top for ``--steps`` steps with
  the recipe's own loss (eq. 2) and learning rate, as the ``flametalk`` stage does.

Also the held-out mouth-region vertex RMS (mm) of each against the tracked weights. Writes
benchmarks/results/flametalk_prior.json under NAME (default: the subject folder's name).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import talksplat  # noqa: F401  - before torch, so talksplat's OpenMP settings apply as for users

# isort: split
import torch
from _machine import machine_info, save_result

from talksplat.eval import runner
from talksplat.recipes import load_avatar
from talksplat.recipes.gaussianflametalk import FlameTalk

RESULTS = Path(__file__).resolve().parent / "results" / "flametalk_prior.json"


def flametalk_variant(recipe, with_transformer_steps: int) -> FlameTalk:
    """A fresh FlameTalk with the linear prior fitted on the training frames, its transformer trained
    for ``with_transformer_steps`` steps of the recipe's loss (0 = the prior alone)."""
    cfg = replace(recipe.cfg.flametalk, linear_prior=True)
    torch.manual_seed(0)
    model = recipe.new_flametalk(cfg)          # as the recipe builds it for a new run
    recipe.flametalk = model
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    model.train()
    for _ in range(with_transformer_steps):
        loss = recipe._flametalk_loss(int(recipe.rng.choice(recipe.data.train_frames)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def evaluate(subject: Path, run: Path, out: Path, variant: str, steps: int) -> dict:
    """``talksplat eval`` of the run with FlameTalk replaced by ``variant``."""
    original = runner.Renderer.open
    made = {}

    def open_with_variant(*args, **kwargs):
        renderer = original(*args, **kwargs)
        recipe = renderer.avatar.recipe
        if variant != "as_trained":
            with torch.enable_grad():
                flametalk_variant(recipe, steps if variant == "prior_and_transformer" else 0)
        made["vertex_rms_mm"] = {k: round(v, 3) for k, v in recipe.mouth_vertex_errors(recipe.data.val_frames).items()}
        return renderer

    runner.Renderer.open = open_with_variant
    try:
        result = runner.evaluate_subject(subject, run, None, out / variant)
    finally:
        runner.Renderer.open = original
    image, motion = result["image"], result["motion"]
    return {"psnr_full": round(image["full"]["psnr"], 3), "psnr_head": round(image["head"]["psnr"], 3),
            "lmd_all_px": round(motion["lmd_all_px"], 3), "lmd_mouth_px": round(motion["lmd_mouth_px"], 3),
            "mouth_opening_r": round(motion["lip_opening"]["correlation"], 3), **made}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("subject", type=Path)
    parser.add_argument("run", type=Path)
    parser.add_argument("--steps", type=int, default=1000, help="transformer steps on top of the prior")
    parser.add_argument("--name", default=None)
    parser.add_argument("--out-root", type=Path, default=Path("/tmp/flametalk_prior"))
    args = parser.parse_args()
    if load_avatar(args.subject, run=args.run).recipe_name != "gaussianflametalk":
        raise SystemExit(f"{args.run} is not a GaussianFlameTalk run")
    rows = {}
    for variant in ("as_trained", "prior_only", "prior_and_transformer"):
        start = time.perf_counter()
        rows[variant] = {**evaluate(args.subject, args.run, args.out_root, variant, args.steps),
                         "seconds": round(time.perf_counter() - start, 1)}
        print(f"{variant:24s} " + "  ".join(f"{k} {v}" for k, v in rows[variant].items()), flush=True)
    save_result(RESULTS, args.name or args.subject.name,
                {"subject": str(args.subject), "run": str(args.run), "transformer_steps": args.steps,
                 "variants": rows, "machine": machine_info()})
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
