"""GaussianFlameTalk vs TalkingGaussian on one prepared subject (issue 16's acceptance figures).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gaussianflametalk.py SUBJECT_DIR \
        --audio A.ogg B.ogg [--gft-set KEY=VALUE ...] [--tg-set KEY=VALUE ...] [--skip-train RECIPE ...]
        [--restart RECIPE ...] [--poses loop still] [--name NAME]

1. Trains (or resumes) both recipes into SUBJECT/runs/<recipe> with the given settings (pick the
   iteration counts so their training wall times match; both are reported).
2. ``talksplat eval`` self-reconstruction of each (held-out PSNR / SSIM, head box, LMD, lip opening r,
   A/V offset) and cross-driven by each unseen speech clip (A/V offset, stability), once per head
   pose source in ``--poses``: ``loop`` (the training frames' poses, as the paper's motion transfer;
   both recipes then share the same head motion) and ``still`` (one fixed pose: any nose motion is
   then wobble of the face itself, what the paper's score is meant to catch).
3. Stability: the eval scores each render against the real video with components normalised over
   that pair; here the nose tracks of GaussianFlameTalk, TalkingGaussian and the real video are also
   scored together (one normalisation over all three), so the two recipes are on one scale; likewise
   the held-out self-reenactment (same frames, same real poses). For ``loop`` also the pose-removed
   residual (``.../loop/pose_removed``; a diagnostic of ours, not the paper's): each nose track minus
   where a fixed 3D nose point lands in the same frames' cameras.
4. FlameTalk alone: held-out mouth-region vertex RMS (mm) vs predicting the mean expression.

Writes benchmarks/results/gaussianflametalk.json under NAME (default: the subject folder's name).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import talksplat  # noqa: F401  - before torch, so talksplat's OpenMP settings apply as for users

# isort: split
import numpy as np
import torch
from _machine import machine_info, save_result

from talksplat.engine.config import apply_overrides
from talksplat.engine.trainer import TrainerConfig, train
from talksplat.eval import EvalConfig, evaluate_subject
from talksplat.eval import metrics as M
from talksplat.eval import signals as S
from talksplat.recipes import RECIPES, load_avatar

RESULTS = Path(__file__).parent / "results" / "gaussianflametalk.json"
RECIPE_NAMES = ("gaussianflametalk", "talkinggaussian")


def _train(subject: Path, name: str, sets: list[str], skip: bool, restart: bool) -> dict:
    run = subject / "runs" / name
    if not skip:
        cls = RECIPES[name]
        cfg = apply_overrides(cls.Config(), dict(item.split("=", 1) for item in sets))
        train(subject, cls, cfg, TrainerConfig(quiet=False), out_dir=run, restart=restart)
    return json.loads((run / "summary.json").read_text())


def _self_eval(subject: Path, name: str) -> tuple[dict, np.ndarray, np.ndarray]:
    out = subject / "eval" / f"gft-bench-{name}"
    m = evaluate_subject(subject, subject / "runs" / name, None, out, EvalConfig(progress=False), name)
    lms = np.load(out / "landmarks.npz")
    motion = m["motion"]
    return {"psnr": m["image"]["full"]["psnr"], "ssim": m["image"]["full"]["ssim"],
            "psnr_head_box": (m["image"]["head"] or {}).get("psnr"), "ssim_head_box": (m["image"]["head"] or {}).get("ssim"),
            "lmd_all_px": motion["lmd_all_px"], "lmd_mouth_px": motion["lmd_mouth_px"],
            "lip_opening_r": motion["lip_opening"]["correlation"],
            "lip_opening_r_check": M.pearson(S.lip_opening(lms["ours"]), S.lip_opening(lms["reference"])),
            "sync": _sync(m["sync"]), "stability_vs_real": _stability(m["stability"]),
            "frames": m["frames"]["evaluated"]}, S.nose_track(lms["ours"]), S.nose_track(lms["reference"])


def _driven_eval(subject: Path, name: str, audio: Path, pose: str) -> tuple[dict, np.ndarray, np.ndarray]:
    out = subject / "eval" / f"gft-bench-{name}-{audio.stem}" / pose
    m = evaluate_subject(subject, subject / "runs" / name, audio, out, EvalConfig(progress=False, pose=pose), name)
    lms = np.load(out / "landmarks.npz")
    return ({"sync": _sync(m["sync"]), "stability_vs_real": _stability(m["stability"]),
             "render_fps": m.get("efficiency", {}).get("render_fps")},
            S.nose_track(lms["ours"]), S.nose_track(lms["reference"]))


def _sync(sync: dict) -> dict:
    keep = ("offset_frames", "confidence", "reliable")
    return {side: {k: sync[side].get(k) for k in keep} for side in ("ours", "reference")}


def _stability(st: dict) -> dict:
    return {side: st[side]["score"] for side in ("ours", "reference") if side in st}


def _joint(tracks: dict[str, np.ndarray]) -> dict[str, float]:
    """Stability of each track, the components normalised over all of them together."""
    return {k: s.score for k, s in zip(tracks, M.stability_scores(list(tracks.values())), strict=True)}


@torch.no_grad()
def _pose_only_nose(subject: Path, frames: np.ndarray, landmark_size: int) -> np.ndarray:
    """(T, 2) where the nose would be in ``frames``' cameras if the face never changed: one 3D nose
    point (the fitted mesh's nose bridge) projected through each frame's camera, in the eval's
    landmark pixels. A diagnostic of ours (not the paper's): a render's nose track minus this one is
    what the face itself adds on top of the shared head pose."""
    recipe = load_avatar(subject, recipe="gaussianflametalk").recipe
    data = recipe.data
    first = int(data.train_frames[0])
    vertices = recipe.mesh.world_vertices(first, torch.zeros(recipe.model.num_expressions), corrected=False)
    nose = vertices[recipe.model.multipie68[27:31]].mean(0)
    cam = torch.stack([data.w2c[int(f)] for f in frames])                 # (T, 4, 4)
    uvw = (cam[:, :3, :3] @ nose + cam[:, :3, 3]) @ data.K.T
    return (uvw[:, :2] / uvw[:, 2:]).numpy() * landmark_size / recipe.cfg.size


def _pose_removed(subject: Path, tracks: dict[str, np.ndarray]) -> dict[str, float]:
    """Joint stability of the nose tracks minus their pose-only tracks (renders: the pose loop's
    source frames; the real video: its own frames)."""
    from talksplat.render.renderer import pingpong

    train = np.asarray(load_avatar(subject, recipe="gaussianflametalk").subject.train_frames)
    size = EvalConfig().landmark_size
    residual = {}
    for k, track in tracks.items():
        frames = np.arange(len(track)) if k == "real" else np.array([pingpong(i, train) for i in range(len(track))])
        residual[k] = track - _pose_only_nose(subject, frames, size)
    return _joint(residual)


def _run_config(subject: Path, name: str) -> dict:
    return json.loads((subject / "runs" / name / "config.json").read_text())


def _render_expression_sigma(subject: Path) -> float:
    """The smoothing the driven renders used (a render-time setting: runs saved before it existed get
    the default)."""
    return load_avatar(subject, recipe="gaussianflametalk").recipe.cfg.render_expression_sigma


@torch.no_grad()
def _flametalk_alone(subject: Path) -> dict:
    avatar = load_avatar(subject, recipe="gaussianflametalk")
    return avatar.recipe.mouth_vertex_errors(avatar.subject.val_frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("subject", type=Path)
    parser.add_argument("--audio", type=Path, nargs="+", required=True, help="unseen speech clips")
    parser.add_argument("--gft-set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--tg-set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--skip-train", nargs="*", choices=RECIPE_NAMES, default=[], metavar="RECIPE",
                        help="evaluate these recipes' existing runs without training")
    parser.add_argument("--restart", nargs="*", choices=RECIPE_NAMES, default=[], metavar="RECIPE",
                        help="train these recipes from scratch (e.g. with more iterations)")
    parser.add_argument("--poses", nargs="+", choices=("loop", "still"), default=["loop", "still"],
                        help="head pose sources of the driven renders")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()

    result: dict = {"machine": machine_info(), "subject": str(args.subject),
                    "settings": {"gaussianflametalk": args.gft_set, "talkinggaussian": args.tg_set}}
    sets = {"gaussianflametalk": args.gft_set, "talkinggaussian": args.tg_set}
    key = args.name or args.subject.name
    self_tracks: dict = {}
    for name in RECIPE_NAMES:
        summary = _train(args.subject, name, sets[name], name in args.skip_train, name in args.restart)
        scores, self_tracks[name], self_tracks["real"] = _self_eval(args.subject, name)
        result[name] = {"train_seconds": summary["train_seconds"], "iterations": summary["iterations"],
                        "gaussians": summary["gaussians"], "ms_per_iteration_median": summary["ms_per_iteration_median"],
                        "threads": summary["threads"], "config": _run_config(args.subject, name),
                        "self": scores, "driven": {}}
        print(json.dumps({name: result[name]["self"]}, indent=1), flush=True)
        save_result(RESULTS, key, result)
    result["flametalk_alone_held_out_mouth_vertex_rms_mm"] = _flametalk_alone(args.subject)
    result["gaussianflametalk_render_expression_sigma"] = _render_expression_sigma(args.subject)
    joint: dict = {}
    result["stability_joint"] = {"label": "GaussianFlameTalk Sec. 3.3 stability of the nose track; components "
                                          "normalised over the three videos together; higher = less stable",
                                 "self_reenactment_held_out": _joint(self_tracks), "by_audio": joint}
    for audio in args.audio:
        for pose in args.poses:
            tracks = {}
            for name in RECIPE_NAMES:
                scores, ours, reference = _driven_eval(args.subject, name, audio, pose)
                result[name]["driven"][f"{audio.name}/{pose}"] = scores
                tracks[name], tracks["real"] = ours, reference
            joint[f"{audio.name}/{pose}"] = _joint(tracks)
            if pose == "loop":
                joint[f"{audio.name}/loop/pose_removed"] = _pose_removed(args.subject, tracks)
            print(json.dumps({f"{audio.name}/{pose}": joint[f"{audio.name}/{pose}"]}), flush=True)
            save_result(RESULTS, key, result)
    print(json.dumps(result, indent=1))
    save_result(RESULTS, key, result)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
