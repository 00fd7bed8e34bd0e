"""How much does a trained avatar's lip motion follow the audio, and how much the head pose? (issue #14,
docs/unigs.md, "Lip sync on unseen speech")

    .venv/bin/python benchmarks/unigs_mouth_motion.py SUBJECT_DIR RUN_DIR [RUN_DIR ...] [--name NAME]

For ~80 training frames spread over the clip, the position offsets (delta mu) the deformation gives
the Gaussians that project into the lips / mouth-opening labels of the most open training frame,
with the conditions the avatar renders with (lip states predicted from the frame's audio):

- ``audio``: the audio code varies with the frame, pose and eye features stay those of the first frame;
- ``pose`` (UniGS only; TalkingGaussian has no pose input): the pose varies, the audio code and eyes
  stay the first frame's;
- ``eyes`` (UniGS only): the eye features vary, the audio code and pose stay the first frame's;
- ``all``: everything varies.

Per variant: the spread over frames of |delta mu| (mm, mean over the mouth Gaussians), and an opening
proxy: the mean vertical (camera y) offset of the mouth Gaussians below the mouth's median height
minus that of those above it (mm); its std over frames (the lip-opening amplitude) and its correlation
with the tracked lip opening of the frames. TalkingGaussian: its face layer (the inside-mouth layer
draws the opening, not the lips). A model-internal statistic, not a lip-sync score.

Appends to benchmarks/results/unigs_mouth_motion.json under NAME (default: the subject folder's name).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import talksplat  # noqa: F401  - before torch, so talksplat's OpenMP settings apply as for users

# isort: split
import numpy as np
import torch
from _machine import machine_info, save_keyed_result

from talksplat.core.labels import INSIDE_MOUTH, LIPS
from talksplat.recipes import load_avatar

RESULTS = Path(__file__).parent / "results" / "unigs_mouth_motion.json"
FRAMES = 80


def mouth_gaussians(data, means: torch.Tensor, t: int) -> torch.Tensor:
    """Mask of the Gaussians whose centres project into frame ``t``'s lips / mouth-opening labels."""
    w2c, K = data.w2c[t], data.K
    cam = means @ w2c[:3, :3].T + w2c[:3, 3]
    u = (cam[:, 0] / cam[:, 2] * K[0, 0] + K[0, 2] - 0.5).round().long().clamp(0, data.size - 1)
    v = (cam[:, 1] / cam[:, 2] * K[1, 1] + K[1, 2] - 0.5).round().long().clamp(0, data.size - 1)
    return torch.isin(data.labels(t)[v, u], torch.tensor([LIPS, INSIDE_MOUTH]))


def motion_figures(offsets: torch.Tensor, means: torch.Tensor, rotation: torch.Tensor, lip_open: np.ndarray) -> dict:
    """offsets (F, N, 3) of the mouth Gaussians -> spread, opening amplitude and its correlation."""
    height = (means @ rotation.T)[:, 1]
    below = height > height.median()
    vertical = (offsets @ rotation.T)[..., 1]
    opening = (vertical[:, below].mean(1) - vertical[:, ~below].mean(1)).numpy()
    return {"spread_mm": round(float(offsets.std(0).norm(dim=-1).mean()), 3),
            "opening_std_mm": round(float(opening.std()), 3),
            "opening_corr_tracked": round(float(np.corrcoef(opening, lip_open)[0, 1]), 3)}


@torch.no_grad()
def unigs_offsets(recipe, frames: np.ndarray):
    from talksplat.recipes.unigs import SET_NAME

    data, means = recipe.data, recipe.sets[SET_NAME].params["means"]
    conds = {int(f): recipe.conditions(int(f)) for f in frames}
    first = int(frames[0])
    gate = recipe.pose_gate(means)     # None unless pose_free_radius_mm > 0

    def offsets(audio_from: str, pose_from: str, eyes_from: str) -> torch.Tensor:
        out = []
        for f, own in conds.items():
            a = own if audio_from == "frame" else conds[first]
            e = own if eyes_from == "frame" else conds[first]
            eyes = recipe.eye_condition(e["expression"])
            w2c = data.w2c[f if pose_from == "frame" else first]
            out.append(recipe.deformation(means, a["audio_code"], eyes, recipe.pose_condition(w2c), gate).d_means)
        return torch.stack(out)

    return means, {"all": offsets("frame", "frame", "frame"), "audio": offsets("frame", "first", "first"),
                   "pose": offsets("first", "frame", "first"), "eyes": offsets("first", "first", "frame")}


@torch.no_grad()
def talkinggaussian_offsets(recipe, frames: np.ndarray):
    means = recipe.sets["face"].params["means"]
    stack = []
    for f in frames:
        c = recipe.conditions(int(f))
        stack.append(recipe.face_motion(means, c["audio_code"], c["expression"]).d_means)
    return means, {"audio": torch.stack(stack)}


def run_figures(subject: Path, run: Path) -> dict:
    avatar = load_avatar(subject, run=run)
    recipe, data = avatar.recipe, avatar.subject
    train = np.asarray(data.train_frames)
    frames = train[:: max(1, len(train) // FRAMES)]
    widest = int(train[np.argmax(data.lip_open[train])])
    if avatar.recipe_name == "unigs":
        means, variants = unigs_offsets(recipe, frames)
    elif avatar.recipe_name == "talkinggaussian":
        means, variants = talkinggaussian_offsets(recipe, frames)
    else:
        raise SystemExit(f"{run}: recipe {avatar.recipe_name} is not measured here")
    mask = mouth_gaussians(data, means, widest)
    rotation = data.w2c[widest][:3, :3]
    lip_open = np.asarray(data.lip_open[frames], dtype=np.float64)
    result = {"recipe": avatar.recipe_name, "step": avatar.checkpoint_step, "mouth_gaussians": int(mask.sum()),
              "frames": len(frames), "config_losses": json.loads(json.dumps(vars(recipe.cfg.losses)))}
    for name, offsets in variants.items():
        result[name] = motion_figures(offsets[:, mask], means[mask], rotation, lip_open)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("subject", type=Path)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    result: dict = {"subject": str(args.subject), "machine": machine_info(), "runs": {}}
    print(f"{'run':32s} {'variant':6s} {'spread mm':>9s} {'opening std mm':>14s} {'r(opening, tracked)':>20s}")
    for run in args.runs:
        figures = run_figures(args.subject, run)
        result["runs"][str(run)] = figures
        for variant in ("audio", "pose", "eyes", "all"):
            if variant in figures:
                f = figures[variant]
                print(f"{run.name:32s} {variant:6s} {f['spread_mm']:9.3f} {f['opening_std_mm']:14.3f} "
                      f"{f['opening_corr_tracked']:20.2f}")
    save_keyed_result(RESULTS, args.name or args.subject.name, result)


if __name__ == "__main__":
    main()
