"""How much of a render's own nose wobble the stability score sees when the head pose is replayed.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/stability_masking.py SUBJECT_DIR \
        [--audio 198-209-0000.hq 3436-172162-0000.hq] [--name NAME]

Reads the ``--pose loop`` renders that ``benchmarks/gaussianflametalk.py`` tracked (their
``landmarks.npz`` under SUBJECT/eval/gft-bench-<recipe>-<audio>/loop), so run that first. With the
pose loop both recipes replay the same camera poses, so each nose track is the pose-only track
(one 3D nose point projected through the source frames' cameras) plus what the face itself adds
(the residual). Scored together (one normalisation per audio clip):

- ``camera_only``: the pose-only track;
- ``camera + k x TalkingGaussian residual`` for k = 0.5, 1, 2, 4: how the score grows with the
  deformation's wobble on top of the replayed head motion;
- ``camera + GaussianFlameTalk residual``: what the GaussianFlameTalk render is made of;
- the residuals alone (k x TalkingGaussian, GaussianFlameTalk), as the ``--pose still`` view sees them.

Also the RMS second difference (px, at the eval's landmark size) of each residual and of the
pose-only track. Writes benchmarks/results/stability_masking.json under NAME (default: the subject
folder's name). A diagnostic of ours, not the paper's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import talksplat  # noqa: F401  - before torch, so talksplat's OpenMP settings apply as for users

# isort: split
import numpy as np
from _machine import machine_info, save_result
from gaussianflametalk import _joint, _pose_only_nose

from talksplat.eval import EvalConfig
from talksplat.eval import signals as S
from talksplat.recipes import load_avatar
from talksplat.render.renderer import pingpong

RESULTS = Path(__file__).resolve().parent / "results" / "stability_masking.json"
RECIPES = ("gaussianflametalk", "talkinggaussian")
SCALES = (0.5, 1.0, 2.0, 4.0)


def rms_second_difference(track: np.ndarray) -> float:
    return round(float(np.sqrt((np.diff(track, 2, axis=0) ** 2).sum(axis=1).mean())), 3)


def clip_figures(subject: Path, clip: str, train: np.ndarray) -> dict:
    tracks = {}
    for recipe in RECIPES:
        landmarks = subject / "eval" / f"gft-bench-{recipe}-{clip}" / "loop" / "landmarks.npz"
        if not landmarks.is_file():
            raise SystemExit(f"{landmarks} is missing: run benchmarks/gaussianflametalk.py on {subject} first")
        tracks[recipe] = S.nose_track(np.load(landmarks)["ours"])
    n = min(len(t) for t in tracks.values())
    camera = _pose_only_nose(subject, np.array([pingpong(i, train) for i in range(n)]), EvalConfig().landmark_size)
    residual = {recipe: track[:n] - camera for recipe, track in tracks.items()}
    tg, gft = residual["talkinggaussian"], residual["gaussianflametalk"]
    loop = {"camera_only": camera, **{f"camera + {k} x talkinggaussian": camera + k * tg for k in SCALES},
            "camera + gaussianflametalk": camera + gft}
    alone = {**{f"{k} x talkinggaussian": k * tg for k in SCALES[:3]}, "gaussianflametalk": gft}
    return {"frames": n,
            "rms_second_difference_px": {"camera_only": rms_second_difference(camera),
                                         **{f"{r}_residual": rms_second_difference(v) for r, v in residual.items()}},
            "loop_scores": {k: round(v, 3) for k, v in _joint(loop).items()},
            "residual_scores": {k: round(v, 3) for k, v in _joint(alone).items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("subject", type=Path)
    parser.add_argument("--audio", nargs="+", default=["198-209-0000.hq", "3436-172162-0000.hq"],
                        help="the audio clips' file stems, as benchmarks/gaussianflametalk.py named their evals")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    train = np.asarray(load_avatar(args.subject, recipe="gaussianflametalk").subject.train_frames)
    result = {"subject": str(args.subject), "clips": {}, "machine": machine_info()}
    for clip in args.audio:
        result["clips"][clip] = figures = clip_figures(args.subject, clip, train)
        print(f"{clip}: {figures['frames']} frames; RMS second difference (px) {figures['rms_second_difference_px']}")
        print("  replayed poses, scored together:", figures["loop_scores"])
        print("  residuals alone, scored together:", figures["residual_scores"])
    save_result(RESULTS, args.name or args.subject.name, result)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
