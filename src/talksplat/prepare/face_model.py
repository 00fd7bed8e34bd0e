"""The ``face_model`` step of ``talksplat prepare``: the head model fitted to the tracked landmarks.

Writes ``face_model.npz`` (keys in docs/dataset.md and docs/headmodel.md): one identity for the
subject, per frame the 53 blendshape weights, a model -> camera pose that refines the stabilised
camera of the ``cameras`` step, the fit error and SyncTalk++'s 7 core coefficients computed from the
blendshapes (``core7``; ``expressions.npz`` keeps the landmark-geometry ones the recipes use).
"""

from __future__ import annotations

import hashlib
import time

import cv2
import numpy as np

from talksplat.prepare import layout as L
from talksplat.prepare.runner import Step, StepRunner

FACE_MODEL = "face_model.npz"
STEP_NAME = "face_model"
STEP_VERSION = 2                    # 2: Gauss-Newton solves in the fit; mouth_open_mm
INTERPOLATED_FRAME_WEIGHT = 0.3     # filled-in (not detected) frames count this much, as in the cameras step
BLINK_EVENT_THRESHOLD = 0.5
MESH_REGION = "narrow_face"         # the part of the mesh drawn over frames in the report
MESH_COLOUR = (80, 200, 255)
MESH_ALPHA = 0.45


def _assets_digest() -> str:
    """The bundled model and correspondence take part in the step's key: new assets redo the fit."""
    from talksplat.headmodel.correspondence import CORRESPONDENCE_FILE
    from talksplat.headmodel.model import MODEL_FILE

    h = hashlib.sha256()
    for path in (MODEL_FILE, CORRESPONDENCE_FILE):
        h.update(path.read_bytes())
    return h.hexdigest()


def _save_npz(runner: StepRunner, rel: str, **arrays: np.ndarray) -> None:
    from talksplat.io.atomic import atomic_path

    with atomic_path(runner.path(rel)) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def world_from_model(fit, scale: float, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """(4, 4) similarity from the model's frame to the cameras' world (the canonical template's head
    frame): ``rotation @ X + translation = scale * (w2c @ world_from_model @ X)`` up to each frame's
    refinement (``deviation_deg``). ``scale, rotation, translation``: the canonical similarity
    ``model ~ s Rc canonical + tc`` of the correspondence."""
    out = np.eye(4)
    out[:3, :3] = rotation.T @ fit.offset_rotation / scale
    out[:3, 3] = rotation.T @ (fit.offset_translation - translation) / scale
    return out


def fit_subject(landmarks: np.ndarray, detected: np.ndarray, K: np.ndarray, w2c: np.ndarray,
                progress=None, cfg=None) -> dict[str, np.ndarray]:
    """All arrays of face_model.npz from crop-pixel landmarks (T, 478, 3), cameras K and w2c (T, 4, 4)."""
    from talksplat.features.expression import CORE_NAMES
    from talksplat.headmodel import (
        core_coefficients,
        default_landmark_basis,
        fit_sequence,
        mouth_opening_mm,
        poses_from_cameras,
    )
    from talksplat.headmodel.correspondence import load_correspondence
    from talksplat.headmodel.fit import FitConfig

    cfg = cfg or FitConfig()
    info = load_correspondence().info
    s, rc, tc = (float(info["info_canonical_scale"]), np.asarray(info["info_canonical_rotation"]),
                 np.asarray(info["info_canonical_translation"]))
    R0, t0 = poses_from_cameras(w2c, s, rc, tc)
    basis = default_landmark_basis()
    fit = fit_sequence(basis, landmarks[..., :2], K, R0, t0, np.where(detected, 1.0, INTERPOLATED_FRAME_WEIGHT),
                       cfg, progress=progress)
    iod = np.linalg.norm(landmarks[:, 33, :2] - landmarks[:, 263, :2], axis=1)
    names = np.array(basis.expression_names)
    return {"identity": fit.identity, "expression": fit.expression, "expression_names": names,
            "rotation": fit.rotation.astype(np.float32), "translation": fit.translation.astype(np.float32),
            "K": K.astype(np.float32), "landmark_error_px": fit.landmark_error_px,
            "landmark_error_iod": (fit.landmark_error_px / np.maximum(iod, 1.0)).astype(np.float32),
            "deviation_deg": fit.deviation_deg, "camera_scale": np.float64(s),
            "landmark_offsets": fit.landmark_offsets,
            "world_from_model": world_from_model(fit, s, rc, tc).astype(np.float32),
            "core7": core_coefficients(fit.expression, basis.expression_names), "core7_names": np.array(CORE_NAMES),
            "mouth_open_mm": mouth_opening_mm(basis, fit.identity, fit.expression),
            "model": np.array("ict-facekit-light (talksplat.headmodel, 30 identity modes)")}


def _step(quiet: bool, bar_factory):
    def run(runner: StepRunner) -> dict:
        from talksplat.features.expression import blink_events
        from talksplat.headmodel.fit import FitConfig, total_iterations

        lms = np.load(runner.path(L.LANDMARKS))
        detected = np.load(runner.path(L.DETECTED))
        cams = np.load(runner.path(L.CAMERAS_NPZ))
        cfg = FitConfig()
        start = time.perf_counter()
        with bar_factory(total_iterations(cfg), "face model", quiet) as bar:
            arrays = fit_subject(lms, detected, cams["K"], cams["w2c"], bar.update, cfg)
        seconds = time.perf_counter() - start
        _save_npz(runner, FACE_MODEL, **arrays)
        names = [str(n) for n in arrays["expression_names"]]
        ex = arrays["expression"]
        blink = ex[:, [names.index("eyeBlink_L"), names.index("eyeBlink_R")]].mean(1)
        return {"landmark_error_px": float(arrays["landmark_error_px"].mean()),
                "landmark_error_iod_percent": float(100 * arrays["landmark_error_iod"].mean()),
                "deviation_from_cameras_deg": float(np.mean(arrays["deviation_deg"])),
                "identity_norm": float(np.linalg.norm(arrays["identity"])),
                "jaw_open_p95": float(np.percentile(ex[:, names.index("jawOpen")], 95)),
                "mouth_open_mm_p95": float(np.percentile(arrays["mouth_open_mm"], 95)),
                "blinks": int(blink_events(blink, BLINK_EVENT_THRESHOLD).size),
                "fit_ms_per_frame": 1000.0 * seconds / max(len(ex), 1)}
    return run


def face_model_step(quiet: bool, bar_factory) -> Step:
    """The step, declared like the others (``bar_factory(total, desc, quiet)`` makes the progress bar)."""
    from talksplat.headmodel.fit import FitConfig

    return Step(STEP_NAME, STEP_VERSION, _step(quiet, bar_factory), [FACE_MODEL], ["frames", "cameras"],
                {"fit": FitConfig().to_json(), "assets": _assets_digest()})


# ---------------------------------------------------------------------------------------------
# Report: the fitted mesh drawn over a frame.
def mesh_overlay(frame: np.ndarray, data, t: int) -> np.ndarray:
    """``frame`` (S, S, 3) RGB with the front-facing triangles of the fitted mesh of frame t drawn on it."""
    import torch

    from talksplat.headmodel import load_head_model, mesh_vertices

    m = load_head_model()
    cam = mesh_vertices(m, torch.as_tensor(data["identity"]), torch.as_tensor(data["expression"][t:t + 1]),
                        torch.as_tensor(data["rotation"][t:t + 1]),
                        torch.as_tensor(data["translation"][t:t + 1]))[0].double().numpy()
    stop = m.regions[MESH_REGION][1]
    tris = m.triangles[(m.triangles < stop).all(1)]
    K = data["K"]
    uv = cam[:, :2] / cam[:, 2:3] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
    a, b, c = cam[tris[:, 0]], cam[tris[:, 1]], cam[tris[:, 2]]
    normal = np.cross(b - a, c - a)
    facing = (normal * a).sum(1) < 0          # towards the camera (at the origin)
    polys = np.round(uv[tris[facing]] * 4).astype(np.int32)   # 2 fractional bits for anti-aliased lines
    lines = frame.copy()
    cv2.polylines(lines, list(polys), True, MESH_COLOUR, 1, cv2.LINE_AA, shift=2)
    return cv2.addWeighted(lines, MESH_ALPHA, frame, 1 - MESH_ALPHA, 0)
