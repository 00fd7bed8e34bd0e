"""UniGS vs TalkingGaussian on one subject: the figures of issue 14 that `talksplat eval` does not give.

    .venv/bin/python benchmarks/unigs.py SUBJECT --audio UNSEEN.wav [--name NAME] [--max-driven-frames N]

Needs a trained run of each recipe (SUBJECT/runs/talkinggaussian, SUBJECT/runs/unigs). For each:

- region PSNR on every held-out frame rendered from its own audio, expression and pose (as `talksplat
  eval`): over the hair, the torso + neck, and hair + torso + neck labels of the real frame (MSE pooled
  over the region's pixels of all frames). TalkingGaussian composites its head over the frame's own
  torso and neck, so its torso figure is flattered by copied pixels wherever its head does not cover them;
- a head-torso seam statistic, like render/seam.py's but at the boundary between the head labels
  (hair, skin, eyes, lips, mouth) and the torso/neck labels of the source frame: at the pixels on the
  0.5 contour of the (slightly blurred) head mask that lie within ``BOUNDARY_RADIUS_PX`` of a torso or
  neck pixel, |dI/dn| of the render vs of the real frame, in grey levels per pixel (ratio > 1: an
  edge the real frame does not have, i.e. a seam or a gap). Measured on the held-out frames and on a
  render driven by unseen speech (poses ping-ponged over the training frames, as `talksplat render`).
  On the held-out frames also the mean absolute error in grey levels within ``BAND_PX`` of that
  boundary (``boundary_band_error``): a gap or a dark line at the chin raises it, blur alone less so;
- the training cost from each run's summary.json, and the `talksplat eval` figures when
  SUBJECT/eval/<recipe>/metrics.json (self) and SUBJECT/eval/<recipe>-driven/metrics.json (driven by
  the unseen speech) exist (`talksplat eval SUBJECT --recipe R -o ...`).

Appends to benchmarks/results/unigs.json under NAME (default: the subject folder's name).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import talksplat  # noqa: F401  - before torch, so talksplat's OpenMP settings apply as for users
import numpy as np
import torch
from _machine import machine_info, save_keyed_result

from talksplat.core.labels import HAIR, HEAD_LABELS, NECK, TORSO
from talksplat.engine.evaluate import to_uint8
from talksplat.eval.metrics import PSNR_CAP_DB
from talksplat.render.renderer import Renderer, RenderOptions, load_driving_audio
from talksplat.render.seam import contour_pixels, normal_derivative, smooth

RESULTS = Path(__file__).parent / "results" / "unigs.json"
RECIPE_NAMES = ("talkinggaussian", "unigs")
REGIONS = {"hair": (HAIR,), "torso_neck": (TORSO, NECK), "hair_torso_neck": (HAIR, TORSO, NECK)}
BOUNDARY_RADIUS_PX = 2      # a head-contour pixel this close to a torso/neck pixel is on the head-torso boundary
MASK_BLUR_SIGMA_PX = 1.0    # smooths the head mask so its gradient gives usable normals
BAND_PX = 3                 # half-width of the band around the head-torso boundary for the band error


# ------------------------------------------------------------------------------------ seam
def head_torso_boundary(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ys, xs, ny, nx): pixels of the head mask's 0.5 contour next to torso/neck, with unit normals."""
    import cv2

    head = smooth(np.isin(labels, HEAD_LABELS).astype(np.float32), MASK_BLUR_SIGMA_PX)
    ys, xs = contour_pixels(head)
    size = 2 * BOUNDARY_RADIUS_PX + 1
    torso = cv2.dilate(np.isin(labels, (TORSO, NECK)).astype(np.uint8), np.ones((size, size), np.uint8)) > 0
    gy, gx = np.gradient(head)
    h, w = labels.shape
    keep = torso[ys, xs] & (ys > 0) & (xs > 0) & (ys < h - 1) & (xs < w - 1)
    ys, xs = ys[keep], xs[keep]
    ny, nx = gy[ys, xs], gx[ys, xs]
    norm = np.hypot(ny, nx)
    ok = norm > 1e-6
    return ys[ok], xs[ok], ny[ok] / norm[ok], nx[ok] / norm[ok]


def boundary_band(labels: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels within ``BAND_PX`` of a head-torso boundary pixel."""
    import cv2

    ys, xs, _, _ = head_torso_boundary(labels)
    seeds = np.zeros(labels.shape, np.uint8)
    seeds[ys, xs] = 1
    size = 2 * BAND_PX + 1
    return cv2.dilate(seeds, np.ones((size, size), np.uint8)) > 0


class BandError:
    """Mean |render - real| (grey levels, all channels) in the band around the head-torso boundary."""

    def __init__(self) -> None:
        self.total, self.count = 0.0, 0

    def add(self, rendered: np.ndarray, real: np.ndarray, labels: np.ndarray) -> None:
        band = boundary_band(labels)
        diff = np.abs(rendered.astype(np.float64) - real.astype(np.float64))[band]
        self.total += float(diff.sum())
        self.count += int(diff.size)

    def result(self) -> float | None:
        return round(self.total / self.count, 3) if self.count else None


class BoundaryMeter:
    """Mean |dI/dn| at the head-torso boundary, rendered vs real (see the module docstring)."""

    def __init__(self) -> None:
        self.rendered, self.real, self.pixels, self.frames = 0.0, 0.0, 0, 0

    def add(self, rendered: np.ndarray, real: np.ndarray, labels: np.ndarray) -> None:
        ys, xs, ny, nx = head_torso_boundary(labels)
        if len(ys) == 0:
            return
        self.rendered += float(normal_derivative(rendered, ys, xs, ny, nx).sum(dtype=np.float64))
        self.real += float(normal_derivative(real, ys, xs, ny, nx).sum(dtype=np.float64))
        self.pixels += len(ys)
        self.frames += 1

    def result(self) -> dict | None:
        if self.pixels == 0:
            return None
        rendered, real = self.rendered / self.pixels, self.real / self.pixels
        return {"rendered": round(rendered, 3), "real": round(real, 3),
                "ratio": round(rendered / real, 3) if real > 0 else None, "pixels": self.pixels, "frames": self.frames}


# ------------------------------------------------------------------------------------ region PSNR
class RegionPSNR:
    def __init__(self) -> None:
        self.squared = {name: 0.0 for name in REGIONS}
        self.count = {name: 0 for name in REGIONS}

    def add(self, rendered: np.ndarray, real: np.ndarray, labels: np.ndarray) -> None:
        diff = (rendered.astype(np.float64) - real.astype(np.float64)) / 255.0
        for name, values in REGIONS.items():
            mask = np.isin(labels, values)
            self.squared[name] += float(np.square(diff[mask]).sum())
            self.count[name] += int(mask.sum()) * diff.shape[-1]

    def result(self) -> dict:
        out = {}
        for name in REGIONS:
            if self.count[name] == 0:
                out[name] = None
                continue
            mse = self.squared[name] / self.count[name]
            out[name] = PSNR_CAP_DB if mse == 0 else round(min(-10 * math.log10(mse), PSNR_CAP_DB), 3)
        return out


# ------------------------------------------------------------------------------------ per run
@torch.no_grad()
def held_out_scores(renderer: Renderer) -> dict:
    data, avatar = renderer.data, renderer.avatar
    regions, seam, band = RegionPSNR(), BoundaryMeter(), BandError()
    for t in (int(f) for f in data.val_frames):
        rendered = to_uint8(avatar.render_own(t)["image"])
        real, labels = to_uint8(data.image(t)), data.labels(t).numpy()
        for meter in (regions, seam, band):
            meter.add(rendered, real, labels)
    return {"frames": len(data.val_frames), "region_psnr": regions.result(), "head_torso_seam": seam.result(),
            "boundary_band_error": band.result()}


@torch.no_grad()
def driven_seam(renderer: Renderer, samples: np.ndarray, max_frames: int) -> dict | None:
    data, options = renderer.data, RenderOptions(pose="loop")
    seam = BoundaryMeter()
    for i, frame in enumerate(renderer.render_frames(samples, options)):
        if i >= max_frames:
            break
        src = renderer.source_index(i, options)
        seam.add(frame, to_uint8(data.image(src)), data.labels(src).numpy())
    return seam.result()


def eval_figures(path: Path) -> dict | None:
    """The figures issue 14 asks for from a `talksplat eval` metrics.json (None when absent)."""
    if not path.is_file():
        return None
    m = json.loads(path.read_text())
    out: dict = {"mode": m["mode"]}
    if m["mode"] == "self":
        out["psnr_full"] = m["image"]["full"]["psnr"]
        out["psnr_head_box"] = (m["image"].get("head") or {}).get("psnr")
        out["ssim_full"] = m["image"]["full"]["ssim"]
        out["lmd_mouth_px"] = m["motion"]["lmd_mouth_px"]
        out["mouth_opening_r"] = m["motion"]["lip_opening"]["correlation"]
    for who in ("ours", "reference"):
        sync = m["sync"][who]
        out[f"sync_{who}"] = {k: sync.get(k) for k in ("offset_frames", "confidence", "reliable", "envelope_correlation")
                              if k in sync} or sync
    out["stability_ours"] = (m["stability"].get("ours") or {}).get("score")
    out["stability_reference"] = (m["stability"].get("reference") or {}).get("score")
    return out


def training_facts(run: Path) -> dict:
    s = json.loads((run / "summary.json").read_text())
    return {k: s.get(k) for k in ("train_seconds", "iterations", "gaussians", "ms_per_iteration_median", "threads")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("subject", type=Path)
    parser.add_argument("--audio", type=Path, required=True, help="unseen speech for the driven seam")
    parser.add_argument("--name", default=None)
    parser.add_argument("--max-driven-frames", type=int, default=250)
    args = parser.parse_args()

    samples = load_driving_audio(args.audio)
    result: dict = {"audio": str(args.audio), "machine": machine_info()}
    for recipe in RECIPE_NAMES:
        run = args.subject / "runs" / recipe
        renderer = Renderer.open(args.subject, recipe=recipe)
        result[recipe] = {"training": training_facts(run), **held_out_scores(renderer),
                          "driven_head_torso_seam": driven_seam(renderer, samples, args.max_driven_frames),
                          "eval_self": eval_figures(args.subject / "eval" / recipe / "metrics.json"),
                          "eval_driven": eval_figures(args.subject / "eval" / f"{recipe}-driven" / "metrics.json")}
        renderer.close()
        print(recipe, json.dumps(result[recipe], indent=1))
    save_keyed_result(RESULTS, args.name or args.subject.name, result)


if __name__ == "__main__":
    main()
