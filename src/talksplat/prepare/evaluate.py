"""Compare a prepared synthetic subject with the ground truth of ``talksplat synth``.

The head frame of the dataset (the canonical template's) differs from the synthetic subject's by
a constant rotation and offset, so rotations are compared after removing the best constant
rotation ``Q`` (``R_est ~ R_gt Q``), and translations through their per-axis motion correlation
and the angle between the directions of the fitted and estimated translation vectors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from talksplat.core.labels import FACE_LABELS, INSIDE_MOUTH
from talksplat.features.expression import blink_events, match_events
from talksplat.prepare import layout as L

BLINK_TOLERANCE_FRAMES = 1
GT_BLINK_THRESHOLD = 0.5
MIN_MOUTH_PIXELS = 20            # per-frame IoU only where the true mouth opening is visible


def rotation_errors_deg(rot_est: np.ndarray, rot_gt: np.ndarray) -> np.ndarray:
    """(T,) angle between R_est and R_gt Q, with Q the chordal-mean constant frame offset."""
    offset = Rotation.from_matrix(np.einsum("tji,tjk->tik", rot_gt, rot_est)).mean().as_matrix()
    err = rot_gt @ offset @ np.transpose(rot_est, (0, 2, 1))
    return np.degrees(np.linalg.norm(Rotation.from_matrix(err).as_rotvec(), axis=1))


def translation_agreement(t_est: np.ndarray, rot_gt: np.ndarray, t_gt: np.ndarray) -> dict[str, float]:
    """Fit t_est ~ s (R_gt o + t_gt) (o: the template origin in the GT head frame, s: scale) and
    report the direction error and how each axis's motion correlates."""
    # Linear in (s*o, s): t_est = R_gt (s o) + s t_gt.
    a = np.concatenate([rot_gt, t_gt[:, :, None]], axis=2).reshape(-1, 4)
    sol, *_ = np.linalg.lstsq(a, t_est.reshape(-1), rcond=None)
    pred = (a @ sol).reshape(-1, 3)
    cos = np.sum(pred * t_est, axis=1) / (np.linalg.norm(pred, axis=1) * np.linalg.norm(t_est, axis=1))
    corr = [float(np.corrcoef(pred[:, k], t_est[:, k])[0, 1]) for k in range(3)]
    return {"direction_error_deg_median": float(np.degrees(np.median(np.arccos(np.clip(cos, -1, 1))))),
            "motion_corr_x": corr[0], "motion_corr_y": corr[1], "motion_corr_z": corr[2],
            "scale": float(sol[3])}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else float("nan")


def mask_agreement(masks: np.ndarray, gt_labels: np.ndarray) -> dict[str, float]:
    """IoUs of inside-mouth, face and background between label maps (T, S, S) and the GT's."""
    mouth_p, mouth_g = masks == INSIDE_MOUTH, gt_labels == 8
    per_frame = [_iou(mouth_p[t], mouth_g[t]) for t in range(masks.shape[0]) if mouth_g[t].sum() >= MIN_MOUTH_PIXELS]
    face_p = np.isin(masks, FACE_LABELS)
    face_g = np.isin(gt_labels, (4, 5, 6, 7))
    return {"inside_mouth_iou_pooled": _iou(mouth_p, mouth_g),
            "inside_mouth_iou_median": float(np.median(per_frame)) if per_frame else float("nan"),
            "inside_mouth_frames": len(per_frame),
            "face_iou": _iou(face_p, face_g), "background_iou": _iou(masks == 0, gt_labels == 0)}


def evaluate_synthetic(subject_dir: str | Path, synth_dir: str | Path) -> dict[str, float]:
    """All ground-truth figures of a subject prepared from a ``talksplat synth`` clip.

    The subject must be prepared at the synthetic clip's own size with the full-frame crop (the
    default framing of the synthetic subject gives it); masks are compared only then (and only when
    the clip was made with label maps).
    """
    root, synth = Path(subject_dir), Path(synth_dir)
    gt = np.load(synth / "ground_truth.npz")
    cams = np.load(root / L.CAMERAS_NPZ)
    crop = json.loads((root / L.CROP_JSON).read_text())
    n = cams["w2c"].shape[0]
    rot_gt, t_gt = gt["rotation"][:n].astype(np.float64), gt["translation_mm"][:n].astype(np.float64)
    out: dict[str, float] = {}
    for name, key in (("stabilised", "w2c"), ("raw", "w2c_raw")):
        err = rotation_errors_deg(cams[key][:, :3, :3], rot_gt)
        out[f"rotation_error_deg_median_{name}"] = float(np.median(err))
        out[f"rotation_error_deg_p90_{name}"] = float(np.percentile(err, 90))
    out.update(translation_agreement(cams["w2c"][:, :3, 3], rot_gt, t_gt))
    focal_gt = float(gt["intrinsics"][0, 0])
    out["focal_source_px"] = float(cams["K_source"][0, 0])
    out["focal_true_px"] = focal_gt
    out["focal_relative_error"] = out["focal_source_px"] / focal_gt - 1.0
    full_frame = "labels" in gt.files and crop["x0"] == 0 and crop["y0"] == 0
    if full_frame and crop["side"] == crop["size"] == gt["labels"].shape[1]:
        masks = np.load(root / L.MASKS, mmap_mode="r")
        out.update(mask_agreement(np.asarray(masks), gt["labels"][:n]))
    with np.load(root / L.EXPRESSIONS) as ex:
        blink, lip = ex["blink"], ex["lip_open_mm"]
    gt_blink = 0.5 * (gt["blink_left"][:n] + gt["blink_right"][:n])
    truth = blink_events(gt_blink, GT_BLINK_THRESHOLD)
    found = blink_events(blink)
    hits = match_events(found, truth, BLINK_TOLERANCE_FRAMES)
    out.update({"blinks_true": int(truth.size), "blinks_found": int(found.size), "blinks_matched": hits,
                "blink_recall": hits / truth.size if truth.size else float("nan"),
                "lip_open_corr": float(np.corrcoef(lip, gt["mouth_open_mm"][:n])[0, 1])})
    return out
