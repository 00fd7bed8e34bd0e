"""How far does an avatar close its lids for each blink coefficient? (issue #20, docs/fidelity.md)

    .venv/bin/python benchmarks/eye_transfer.py SUBJECT_DIR RUN_DIR [--key KEY] [--every N]

Renders the training frames with a blink coefficient of at least 0.2, and every N-th other training
frame, twice: with the frame's own conditions, and with the audio code (and lip state) of the frame
half a clip away - the expression and pose stay the frame's own. FaceMesh tracks the eye aspect ratio
(EAR) on both renders (over a fixed backdrop, as `talksplat eval` does) and on the real frame.
Prints the mean EAR per band of blink coefficient, and the frames with the lids at least half shut,
and stores them under KEY in benchmarks/results/eye_transfer.json.

If the lids close less under the foreign audio, the field learned part of a blink through the
frame's audio: the lids will then half-close under new speech.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from _machine import machine_info

import talksplat  # noqa: F401  - before torch work, so talksplat's OpenMP settings apply as for users
from talksplat.data.samplers import SHUT_EYES_BLINK
from talksplat.eval import signals as S
from talksplat.render.renderer import Renderer

RESULTS = Path(__file__).parent / "results" / "eye_transfer.json"
BANDS = ((0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 0.95), (0.95, 1.01))


def _uint8(image: torch.Tensor) -> np.ndarray:
    return (image.clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)


def _frames(blink: np.ndarray, train: np.ndarray, every: int) -> np.ndarray:
    return np.unique(np.concatenate([train[blink[train] >= BANDS[1][0]], train[::every]]))


def _with_foreign_audio(own: dict, foreign: dict) -> dict:
    """A frame's conditions with another frame's audio code (and lip state): its expression stays."""
    return {**own, **{k: v for k, v in foreign.items() if k != "expression"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("subject", type=Path)
    parser.add_argument("run", type=Path)
    parser.add_argument("--key", default=None, help="results key (default: the run folder's name)")
    parser.add_argument("--every", type=int, default=8, help="also every N-th training frame (open eyes)")
    args = parser.parse_args()
    renderer = Renderer.open(args.subject, None, args.run)
    data, avatar = renderer.data, renderer.avatar
    train, blink = np.asarray(data.train_frames), np.asarray(data.blink)
    frames = _frames(blink, train, args.every)
    backdrop = data.backdrop(int(train[0]))
    tracked: dict[str, list] = {"real": [], "own": [], "foreign": []}
    with S.LandmarkTracker(256) as real, S.LandmarkTracker(256) as own, S.LandmarkTracker(256) as foreign:
        for t in frames:
            t = int(t)
            other = int(train[(np.searchsorted(train, t) + len(train) // 2) % len(train)])
            conditions_own = avatar.recipe.conditions(t)
            conditions_foreign = _with_foreign_audio(conditions_own, avatar.recipe.conditions(other))
            for name, tracker, conditions in (("own", own, conditions_own), ("foreign", foreign, conditions_foreign)):
                out = avatar.render(t, conditions)
                tracked[name].append(tracker(_uint8(out["head"] + (1 - out["alpha"]) * backdrop)))
            tracked["real"].append(real(_uint8(data.image(t))))
    ear = {k: S.eye_aspect_ratio(np.stack(v)) for k, v in tracked.items()}
    b = blink[frames]
    bands = []
    print(f"{args.run}: mean EAR per blink band (median EAR real {np.nanmedian(ear['real']):.3f}, "
          f"ours {np.nanmedian(ear['own']):.3f})")
    print("| blink | frames | real | ours, own audio | ours, foreign audio |\n|---|---|---|---|---|")
    for lo, hi in BANDS:
        m = (b >= lo) & (b < hi)
        if m.any():
            row = {"band": [lo, min(hi, 1.0)], "frames": int(m.sum()),
                   **{k: float(np.nanmean(v[m])) for k, v in ear.items()}}
            bands.append(row)
            print(f"| {lo:.2f}-{min(hi, 1.0):.2f} | {row['frames']} | {row['real']:.3f} | {row['own']:.3f} | "
                  f"{row['foreign']:.3f} |")
    shut = [{"frame": int(t), "blink": float(c), **{k: float(v[i]) for k, v in ear.items()}}
            for i, (t, c) in enumerate(zip(frames, b)) if c >= SHUT_EYES_BLINK]
    for row in shut:
        print(f"  frame {row['frame']:4d} blink {row['blink']:.2f}: real {row['real']:.3f}, own audio "
              f"{row['own']:.3f}, foreign audio {row['foreign']:.3f}")
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[args.key or args.run.name] = {"machine": machine_info(), "subject": str(args.subject),
                                         "run": str(args.run), "bands": bands, "shut_frames": shut}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
