"""``talksplat prepare``: a raw talking video -> a training set (see docs/dataset.md).

Steps (each resumable, see :mod:`talksplat.prepare.runner`): media -> track -> frames ->
cameras -> masks -> expressions -> audio -> split -> report; subject.json is written last.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from talksplat.core.constants import SAMPLE_RATE
from talksplat.errors import TalksplatError, UsageError
from talksplat.features.audio import shift_audio
from talksplat.io import save_wav
from talksplat.io.atomic import atomic_path
from talksplat.io.video import iter_frames
from talksplat.prepare import layout as L
from talksplat.prepare.config import PrepareConfig
from talksplat.prepare.face_model import FACE_MODEL, face_model_step
from talksplat.prepare.face_model import STEP_VERSION as FACE_MODEL_VERSION
from talksplat.prepare.guards import (
    prepare_output_folder,
    refuse_other_video_over_runs,
    remove_empty_folders,
    warn,
)
from talksplat.prepare.media import check_input, check_truncation, extract_audio, resample_and_store
from talksplat.prepare.runner import Step, StepRunner, file_sha256, write_json_atomic

# Steps' versions: bump one to make existing datasets redo that step (and what follows).
# masks 2: landmark polygons labelled by pixel centres (cv2.fillPoly grew them by ~half a pixel).
STEP_VERSIONS = {"media": 1, "track": 1, "frames": 1, "cameras": 1, "masks": 2, "expressions": 1,
                 "face_model": FACE_MODEL_VERSION, "audio": 2, "split": 1, "report": 1}
# Interpolated (not detected) frames count this much in the pose fit.
INTERPOLATED_FRAME_WEIGHT = 0.3
# The error curve of the focal search: focal values within this relative error of the minimum
# are reported as the plausible range (a flat curve = a poorly determined focal).
FOCAL_RANGE_TOLERANCE = 0.01
# A plausible range wider than this ratio (max / min) gets a warning: the clip hardly constrains the focal.
FOCAL_FLAT_RATIO = 1.25
AUDIO_PENDING = "audio features: pending (issue 7)"
LIP_LANDMARKS = None   # set lazily (inner + outer lips) to avoid importing tracking at import time


@dataclass
class PrepareResult:
    subject_dir: Path
    n_frames: int
    summary: dict
    ran: list[str]
    skipped: list[str]
    seconds: float


def _bar(total: int, desc: str, quiet: bool) -> tqdm:
    return tqdm(total=total, desc=f"{desc:<11}", unit="fr", disable=quiet, leave=not quiet,
                dynamic_ncols=True, mininterval=0.5)


def _save_npy(runner: StepRunner, rel: str, array: np.ndarray) -> None:
    with atomic_path(runner.path(rel)) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def _save_npz(runner: StepRunner, rel: str, **arrays: np.ndarray) -> None:
    with atomic_path(runner.path(rel)) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _save_png(runner: StepRunner, rel: str, rgb: np.ndarray) -> None:
    with atomic_path(runner.path(rel)) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f"cannot write {tmp}")


def _load_json(runner: StepRunner, rel: str) -> dict:
    return json.loads(runner.path(rel).read_text())


# ----------------------------------------------------------------------------------------------
# 1. media
def _step_media(video: Path, cfg: PrepareConfig, header, quiet: bool) -> Callable[[StepRunner], dict]:
    def run(runner: StepRunner) -> dict:
        try:
            return store(runner)
        except BaseException:
            # media/full.mp4 is complete before the truncation and length checks can refuse the input:
            # a refused input must not leave it (or the audio) behind.
            for rel in _media_outputs(cfg):
                runner.path(rel).unlink(missing_ok=True)
            raise

    def store(runner: StepRunner) -> dict:
        est = max(int(header.duration * cfg.fps), 1)
        with _bar(est, "media", quiet) as bar:
            res = resample_and_store(video, runner.path(L.MEDIA_VIDEO), cfg.fps, cfg.full_video_crf, bar.update)
        check_truncation(video, header.duration, res["source_duration"])
        if res["source_duration"] < cfg.min_seconds:
            raise UsageError(f"{video} is {res['source_duration']:.1f} s long; at least {cfg.min_seconds:g} s "
                             "is needed (record or pick a longer clip)")
        shift = 0.0
        if cfg.audio:
            samples, shift = extract_audio(video, res["n_frames"], cfg.fps)
            save_wav(runner.path(L.MEDIA_AUDIO), samples, SAMPLE_RATE)
        media = {"source": {"name": video.name, "path": str(video.resolve()), "sha256": runner.source_hash,
                            "width": res["width"], "height": res["height"], "fps": header.fps,
                            "frames_decoded": res["source_frames"], "duration_s": res["source_duration"],
                            "has_audio": header.has_audio},
                 "fps": cfg.fps, "n_frames": res["n_frames"], "width": res["width"], "height": res["height"],
                 "padded_to_even": res["padded"], "audio_start_shift_s": shift, "frame_map": res["frame_map"]}
        write_json_atomic(runner.path(L.MEDIA_JSON), media)
        return {"n_frames": res["n_frames"], "width": res["width"], "height": res["height"],
                "source_fps": header.fps, "source_frames": res["source_frames"]}
    return run


def _media_outputs(cfg: PrepareConfig) -> list[str]:
    return [L.MEDIA_VIDEO, L.MEDIA_JSON] + ([L.MEDIA_AUDIO] if cfg.audio else [])


# ----------------------------------------------------------------------------------------------
# 2. track (FaceMesh on full-resolution frames, subject choice, gap filling, the crop box)
def _step_track(video: Path, cfg: PrepareConfig, quiet: bool, warn: Callable[[str], None]):
    def run(runner: StepRunner) -> dict:
        from talksplat.tracking.crop import compute_crop_box
        from talksplat.tracking.facemesh import FaceMeshTracker
        from talksplat.tracking.subject import (
            MULTI_FACE_WARN_FRACTION,
            choose_subject,
            interpolate_gaps,
            longest_gap,
        )

        media = _load_json(runner, L.MEDIA_JSON)
        n, width, height = media["n_frames"], media["width"], media["height"]
        faces: list[list[np.ndarray]] = []
        with _bar(n, "track", quiet) as bar, FaceMeshTracker(max_num_faces=cfg.max_faces) as tracker:
            for _, frame in iter_frames(runner.path(L.MEDIA_VIDEO)):
                faces.append(tracker.process_all(frame[:height, :width]))
                bar.update(1)
        track = choose_subject(faces[:n])
        rate = track.detection_rate
        if rate == 0.0:
            raise TalksplatError(f"no face found in {video}: give a video of one person facing the camera")
        missing = 1.0 - rate
        if missing > cfg.max_missing_fraction:
            raise TalksplatError(f"the face is missing in {100 * missing:.1f}% of the frames of {video} (at most "
                                 f"{100 * cfg.max_missing_fraction:.0f}% allowed): trim the clip to where the face "
                                 "is visible")
        if track.multi_face_frames > MULTI_FACE_WARN_FRACTION * n:
            warn(f"several faces in {track.multi_face_frames} of {n} frames: tracking the largest, most "
                 "consistent one; check report/contact_sheet.png")
        landmarks = interpolate_gaps(track.landmarks, track.detected)
        box = compute_crop_box(landmarks, width, height, cfg.size, cfg.crop_face_scale)
        _save_npy(runner, L.LANDMARKS_SOURCE, landmarks.astype(np.float32))
        _save_npy(runner, L.DETECTED, track.detected)
        write_json_atomic(runner.path(L.CROP_JSON), {**box.to_json(), "source_width": width,
                                                     "source_height": height,
                                                     "convention": "crop = resize(frame[y0:y0+side, x0:x0+side], size)"})
        info = {"detection_rate": rate, "detected_frames": int(track.detected.sum()),
                "multi_face_frames": track.multi_face_frames, "longest_gap_frames": longest_gap(track.detected),
                "crop": box.to_json()}
        write_json_atomic(runner.path(L.TRACK_JSON), info)
        return info
    return run


# ----------------------------------------------------------------------------------------------
# 3. frames (fixed crop at --size)
def _crop_box(runner: StepRunner):
    from talksplat.tracking.crop import CropBox

    c = _load_json(runner, L.CROP_JSON)
    return CropBox(c["x0"], c["y0"], c["side"], c["size"])


def _step_frames(cfg: PrepareConfig, quiet: bool):
    def run(runner: StepRunner) -> dict:
        from talksplat.tracking.crop import crop_frame, source_to_crop

        media = _load_json(runner, L.MEDIA_JSON)
        n = media["n_frames"]
        box = _crop_box(runner)
        with atomic_path(runner.path(L.FRAMES)) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, cfg.size, cfg.size, 3))
            with _bar(n, "frames", quiet) as bar:
                for i, (_, frame) in enumerate(iter_frames(runner.path(L.MEDIA_VIDEO))):
                    if i >= n:
                        break
                    out[i] = crop_frame(frame, box)
                    bar.update(1)
            out.flush()
            del out
        lms = np.load(runner.path(L.LANDMARKS_SOURCE))
        _save_npy(runner, L.LANDMARKS, source_to_crop(lms, box).astype(np.float32))
        return {"shape": [n, cfg.size, cfg.size, 3]}
    return run


# ----------------------------------------------------------------------------------------------
# 4. cameras (focal search, per-frame PnP, Head-Sync Stabilizer)
def _w2c(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    out = np.tile(np.eye(4), (rotation.shape[0], 1, 1))
    out[:, :3, :3] = rotation
    out[:, :3, 3] = translation
    return out


def _focal_range(factors: np.ndarray, errors: np.ndarray, width: int) -> list[float]:
    ok = errors <= errors.min() * (1 + FOCAL_RANGE_TOLERANCE)
    return [float(factors[ok].min() * width), float(factors[ok].max() * width)]


def _step_cameras(cfg: PrepareConfig, quiet: bool, warn: Callable[[str], None]):
    def run(runner: StepRunner) -> dict:
        from talksplat.core.landmarks import NUM_MESH_VERTICES
        from talksplat.tracking import pose as P
        from talksplat.tracking import stabiliser as S
        from talksplat.tracking.crop import crop_intrinsics
        from talksplat.tracking.template import load_canonical_template

        media = _load_json(runner, L.MEDIA_JSON)
        width, height = media["width"], media["height"]
        tpl = load_canonical_template()
        src = np.load(runner.path(L.LANDMARKS_SOURCE))[:, :NUM_MESH_VERTICES, :2].astype(np.float64)
        crop_lm = np.load(runner.path(L.LANDMARKS))[:, :NUM_MESH_VERTICES, :2].astype(np.float64)
        detected = np.load(runner.path(L.DETECTED))
        n = src.shape[0]
        frame_weight = np.where(detected, 1.0, INTERPOLATED_FRAME_WEIGHT)
        with _bar(n, "cameras", quiet) as bar:
            search = P.search_focal(src, tpl.vertices, tpl.weights, width, height, frame_weight=detected.astype(float))
            focal_range = _focal_range(search.factors, search.errors, width)
            if search.at_edge:
                warn("the focal-length search hit the end of its range: the focal is poorly determined "
                     "(little head motion or a very long lens)")
            elif focal_range[1] > FOCAL_FLAT_RATIO * focal_range[0]:
                warn(f"the focal length is poorly determined by this clip: {focal_range[0]:.0f} to "
                     f"{focal_range[1]:.0f} px fit the landmarks within {100 * FOCAL_RANGE_TOLERANCE:g}% of the best; "
                     f"using {search.focal:.0f} px (head rotations hardly depend on it)")
            K_src = P.intrinsics_matrix(search.focal, width, height)
            K = crop_intrinsics(K_src, _crop_box(runner))
            lm_obs = P.Observations.from_landmarks(crop_lm, tpl.vertices, tpl.weights, frame_weight)
            R0, t0 = P.initial_poses(crop_lm, tpl.vertices, tpl.weights, K)
            R_raw, t_raw = P.refine_poses(lm_obs, R0, t0, K)
            raw_err = P.weighted_frame_error(lm_obs, R_raw, t_raw, K)
            info: dict = {"focal_px": float(K[0, 0]), "focal_source_px": search.focal,
                          "focal_factor": search.focal / width, "focal_at_edge": search.at_edge,
                          "focal_range_source_px": focal_range,
                          "landmark_error_raw_px": float(np.mean(raw_err)),
                          "jitter_raw_deg": P.rotation_jitter_deg(R_raw),
                          "jitter_raw_mm": P.translation_jitter_mm(t_raw)}
            R, t = R_raw, t_raw
            if cfg.stabilise:
                frames = np.load(runner.path(L.FRAMES), mmap_mode="r")

                def gray(i: int) -> np.ndarray:
                    return cv2.cvtColor(np.asarray(frames[i]), cv2.COLOR_RGB2GRAY)

                fr, tr, uv = S.track_keypoints(gray, n, crop_lm, progress=bar.update)
                tracks = S.lift_tracks(fr, tr, uv, crop_lm, tpl, R_raw, t_raw)
                res = S.stabilise(lm_obs, tracks, R_raw, t_raw, K)
                R, t = res.rotation, res.translation
                info.update({"keypoint_tracks": tracks.num_tracks, "keypoint_observations": int(tracks.frame.size),
                             "keypoint_error_px": res.keypoint_error_px})
            else:
                bar.update(n)
        err = P.weighted_frame_error(lm_obs, R, t, K)
        info.update({"landmark_error_px": float(np.mean(err)), "jitter_deg": P.rotation_jitter_deg(R),
                     "jitter_mm": P.translation_jitter_mm(t)})
        w2c, w2c_raw = _w2c(R, t), _w2c(R_raw, t_raw)
        _save_npz(runner, L.CAMERAS_NPZ, K=K, K_source=K_src, w2c=w2c, w2c_raw=w2c_raw,
                  landmark_error_px=err, landmark_error_raw_px=raw_err,
                  focal_factors=search.factors, focal_errors=search.errors,
                  euler_deg=P.euler_pyr_deg(R), euler_raw_deg=P.euler_pyr_deg(R_raw))
        write_json_atomic(runner.path(L.CAMERAS_JSON), {
            "camera_model": "PINHOLE", "w": cfg.size, "h": cfg.size,
            "fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2]),
            "convention": "OpenCV: x right, y down, z forward; pixel centres at integer coordinates; "
                          "world = head frame (mm, canonical face template); X_cam = w2c @ [X_world, 1]",
            "template": tpl.name, "stabilised": cfg.stabilise,
            "frames": [{"frame": i, "w2c": np.round(w2c[i], 6).tolist(),
                        "landmark_error_px": round(float(err[i]), 4)} for i in range(n)]})
        return info
    return run


# ----------------------------------------------------------------------------------------------
# 5. masks + background plate
def _step_masks(cfg: PrepareConfig, quiet: bool):
    def run(runner: StepRunner) -> dict:
        from talksplat.core.labels import LABELS
        from talksplat.tracking.masks import (
            PersonSegmenter,
            background_plate,
            closed_mouth_corrected_lips,
            label_map,
        )

        frames = np.load(runner.path(L.FRAMES), mmap_mode="r")
        lms = np.load(runner.path(L.LANDMARKS))
        lips = closed_mouth_corrected_lips(lms)
        n = frames.shape[0]
        counts = np.zeros(len(LABELS), np.int64)
        with atomic_path(runner.path(L.MASKS)) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, cfg.size, cfg.size))
            with _bar(n, "masks", quiet) as bar, PersonSegmenter() as seg:
                for i in range(n):
                    frame = np.asarray(frames[i])
                    out[i] = label_map(lms[i], seg(frame), frame, lips[i])
                    counts += np.bincount(out[i].ravel(), minlength=len(LABELS))
                    bar.update(1)
            out.flush()
            plate, seen = background_plate(frames, out)
            del out
        _save_png(runner, L.BACKGROUND, plate)
        fractions = counts / counts.sum()
        return {"label_fractions": {LABELS[k]: float(fractions[k]) for k in LABELS},
                "background_seen_fraction": float(seen.mean())}
    return run


# ----------------------------------------------------------------------------------------------
# 6. expressions
def _step_expressions(quiet: bool):
    def run(runner: StepRunner) -> dict:
        from talksplat.features.expression import CORE_NAMES, blink_events, compute_expressions
        from talksplat.tracking.template import load_canonical_template

        tpl = load_canonical_template()
        lms = np.load(runner.path(L.LANDMARKS_SOURCE))
        with _bar(lms.shape[0], "expressions", quiet) as bar:
            sig = compute_expressions(lms, tpl.weights, tpl.eye_corner_distance_mm)
            bar.update(lms.shape[0])
        events = blink_events(sig.blink)
        _save_npz(runner, L.EXPRESSIONS, core=sig.core, core_raw=sig.core_raw, core_names=np.array(CORE_NAMES),
                  blink=sig.blink, lip_open_mm=sig.lip_open_mm, lips_part=sig.lips_part, blink_events=events)
        return {"core_names": list(CORE_NAMES), "normalisation": sig.normalisation, "blinks": int(events.size),
                "lip_open_mm_median": float(np.median(sig.lip_open_mm))}
    return run


# ----------------------------------------------------------------------------------------------
# 7. audio features + A/V offset (issue 7's API; a clear hook while it has not landed)
def _features_api():
    """(compute_default_features, estimate_offset) or None where issue 7's API is missing."""
    try:
        from talksplat.features.registry import compute_default_features
    except (ImportError, AttributeError):
        compute_default_features = None
    try:
        from talksplat.features.sync import estimate_offset
    except (ImportError, AttributeError):
        estimate_offset = None
    return compute_default_features, estimate_offset


def _step_audio(cfg: PrepareConfig, quiet: bool, outputs: list[str]):
    def run(runner: StepRunner) -> dict:
        from talksplat.core.landmarks import LIP_POINTS
        from talksplat.io import load_audio

        compute, estimate = _features_api()
        samples = load_audio(runner.path(L.MEDIA_AUDIO))
        n = _load_json(runner, L.MEDIA_JSON)["n_frames"]
        info: dict = {"offset_correction": cfg.offset_correction}
        with _bar(n, "audio", quiet) as bar:
            applied = 0
            if estimate is None:
                info["offset"] = AUDIO_PENDING
            else:
                mouth = np.load(runner.path(L.LANDMARKS))[:, list(LIP_POINTS), :2]
                est = estimate(mouth.astype(np.float32), samples, fps=float(cfg.fps), sample_rate=SAMPLE_RATE)
                info["offset"] = {"offset_frames": int(est.offset_frames), "confidence": float(est.confidence),
                                  "reliable": bool(est.reliable)}
                natural_lead = 0 <= est.offset_frames <= cfg.natural_lead_frames
                if cfg.offset_correction and est.reliable and not natural_lead:
                    applied = int(est.offset_frames)
                    # the same shift (and rounding) as features.sync_offset's estimate assumes
                    samples = shift_audio(samples, applied, SAMPLE_RATE, cfg.fps)
            info["applied_shift_frames"] = applied
            save_wav(runner.path(L.AUDIO_WAV), samples, SAMPLE_RATE)
            outputs[:] = [L.AUDIO_WAV, L.AUDIO_JSON]
            if compute is None:
                info["features"] = AUDIO_PENDING
            else:
                paths = compute(runner.path(L.AUDIO_WAV), n, runner.path(L.AUDIO_DIR))
                info["features"] = {k: str(Path(p).relative_to(runner.root)) for k, p in paths.items()}
                outputs.extend(info["features"].values())
            bar.update(n)
        write_json_atomic(runner.path(L.AUDIO_JSON), info)
        return info
    return run


# ----------------------------------------------------------------------------------------------
# 8. split (+ peer-style transforms files)
def _c2w_opengl(w2c: np.ndarray) -> np.ndarray:
    """World-to-camera (OpenCV) -> camera-to-world with OpenGL axes (x right, y up, z back)."""
    c2w = np.linalg.inv(w2c)
    return c2w @ np.diag([1.0, -1.0, -1.0, 1.0])


def _step_split(cfg: PrepareConfig):
    def run(runner: StepRunner) -> dict:
        n = _load_json(runner, L.MEDIA_JSON)["n_frames"]
        n_val = max(round(cfg.val_fraction * n), 1 if cfg.val_fraction > 0 else 0)
        n_train = n - n_val
        split = {"train": {"start": 0, "stop": n_train}, "val": {"start": n_train, "stop": n},
                 "n_train": n_train, "n_val": n_val, "rule": "the last val_fraction of frames is held out"}
        write_json_atomic(runner.path(L.SPLIT_JSON), split)
        cams = np.load(runner.path(L.CAMERAS_NPZ))
        K, w2c = cams["K"], cams["w2c"]
        for rel, rng in ((L.TRANSFORMS_TRAIN, range(n_train)), (L.TRANSFORMS_VAL, range(n_train, n))):
            write_json_atomic(runner.path(rel), {
                "focal_len": float(K[0, 0]), "cx": float(K[0, 2]), "cy": float(K[1, 2]), "w": cfg.size,
                "h": cfg.size, "note": "transform_matrix is camera-to-world with OpenGL axes (peer format); "
                                       "cameras.npz holds OpenCV world-to-camera",
                "frames": [{"img_id": i, "aud_id": i,
                            "transform_matrix": np.round(_c2w_opengl(w2c[i]), 6).tolist()} for i in rng]})
        return split
    return run


# ----------------------------------------------------------------------------------------------
def _summary(runner: StepRunner, cfg: PrepareConfig, ms_per_frame: float | None) -> dict:
    media, track, cams = runner.info["media"], runner.info["track"], runner.info["cameras"]
    audio = runner.info.get("audio", {"features": "none (--no-audio)", "offset": "none (--no-audio)"})
    return {"frames": media["n_frames"], "fps": cfg.fps, "size": cfg.size,
            "source": {"width": media["width"], "height": media["height"], "fps": media["source_fps"]},
            "detection_rate": track["detection_rate"], "multi_face_frames": track["multi_face_frames"],
            "crop": track["crop"],
            "focal_px": cams["focal_px"], "focal_source_px": cams["focal_source_px"],
            "focal_range_source_px": cams["focal_range_source_px"], "focal_at_edge": cams["focal_at_edge"],
            "reprojection_error_px": cams["landmark_error_px"],
            "reprojection_error_raw_px": cams["landmark_error_raw_px"],
            "keypoint_error_px": cams.get("keypoint_error_px"),
            "jitter_deg": cams["jitter_deg"], "jitter_raw_deg": cams["jitter_raw_deg"],
            "jitter_mm": cams["jitter_mm"], "jitter_raw_mm": cams["jitter_raw_mm"],
            "jitter_definition": "RMS of the second difference of frame-to-frame rotation increments (deg) / "
                                 "of translations (mm); raw = per-frame landmark PnP",
            "blinks": runner.info["expressions"]["blinks"],
            "face_model": runner.info.get("face_model"),
            "background_seen_fraction": runner.info["masks"]["background_seen_fraction"],
            "audio_features": audio.get("features"), "av_offset": audio.get("offset"),
            "audio_shift_applied_frames": audio.get("applied_shift_frames", 0),
            "split": {"n_train": runner.info["split"]["n_train"], "n_val": runner.info["split"]["n_val"]},
            "ms_per_frame": ms_per_frame,
            "ms_per_frame_definition": "wall time of all steps except audio features, divided by frames",
            "step_seconds": {name: runner.seconds(name) for name in STEP_VERSIONS}}


def _step_report(cfg: PrepareConfig, quiet: bool):
    def run(runner: StepRunner) -> dict:
        from talksplat.prepare.report import contact_sheet, curves_plot

        n = runner.info["media"]["n_frames"]
        with _bar(3, "report", quiet) as bar:
            done = [s for s in STEP_VERSIONS if s != "report"]
            total = sum(runner.seconds(s) for s in done if s != "audio")
            # A time per frame only when every step ran now (skipped steps would make it meaningless).
            ms = 1000.0 * total / n if all(s in runner.ran for s in done if s in runner.info) else None
            write_json_atomic(runner.path(L.SUMMARY), _summary(runner, cfg, ms))
            bar.update(1)
            _save_png(runner, L.CONTACT_SHEET, contact_sheet(runner.root))
            bar.update(1)
            _save_png(runner, L.CURVES, curves_plot(runner.root))
            bar.update(1)
        return {}
    return run


def _write_subject_json(runner: StepRunner, cfg: PrepareConfig, video: Path) -> None:
    media = _load_json(runner, L.MEDIA_JSON)
    files = {"frames": L.FRAMES, "landmarks": L.LANDMARKS, "masks": L.MASKS, "background": L.BACKGROUND,
             "cameras": L.CAMERAS_NPZ, "cameras_json": L.CAMERAS_JSON, "expressions": L.EXPRESSIONS, "face_model": FACE_MODEL,
             "split": L.SPLIT_JSON, "crop": L.CROP_JSON, "full_video": L.MEDIA_VIDEO,
             "transforms_train": L.TRANSFORMS_TRAIN, "transforms_val": L.TRANSFORMS_VAL, "report": L.SUMMARY}
    if cfg.audio:
        files["audio"] = L.AUDIO_WAV
        feats = runner.info.get("audio", {}).get("features")
        if isinstance(feats, dict):
            files.update({f"audio_{k}": v for k, v in feats.items()})
    subject = {"format": L.FORMAT, "format_version": L.FORMAT_VERSION, "config": cfg.to_json(),
               "source": media["source"], "fps": cfg.fps, "size": cfg.size, "n_frames": media["n_frames"],
               "split": {k: runner.info["split"][k] for k in ("train", "val")},
               "crop": _load_json(runner, L.CROP_JSON), "labels": _labels(), "files": files,
               "steps": {s: {"seconds": runner.seconds(s)} for s in STEP_VERSIONS if s in runner.info}}
    write_json_atomic(runner.path(L.SUBJECT_JSON), subject)


def _labels() -> dict[str, str]:
    from talksplat.core.labels import LABELS

    return {str(k): v for k, v in LABELS.items()}


def prepare(video: str | Path, subject_dir: str | Path, cfg: PrepareConfig | None = None,
            quiet: bool = False, force: bool = False, log: Callable[[str], None] | None = None) -> PrepareResult:
    """Turn ``video`` into a training set in ``subject_dir`` (resumable; see the module docstring)."""
    cfg = cfg or PrepareConfig()
    cfg.validate()
    video, root = Path(video), Path(subject_dir)
    log = log or (lambda msg: None if quiet else print(msg))
    header = check_input(video, cfg)
    source_hash = file_sha256(video)
    refuse_other_video_over_runs(root, source_hash, force)
    created = prepare_output_folder(root)
    start = time.perf_counter()
    runner = StepRunner(root, source_hash, log=log)
    audio_outputs: list[str] = [L.AUDIO_WAV, L.AUDIO_JSON]
    compute, estimate = _features_api()
    steps = [
        Step("media", STEP_VERSIONS["media"], _step_media(video, cfg, header, quiet), _media_outputs(cfg), [],
             {"fps": cfg.fps, "audio": cfg.audio, "min_seconds": cfg.min_seconds, "crf": cfg.full_video_crf}),
        Step("track", STEP_VERSIONS["track"], _step_track(video, cfg, quiet, warn),
             [L.LANDMARKS_SOURCE, L.DETECTED, L.CROP_JSON, L.TRACK_JSON], ["media"],
             {"size": cfg.size, "max_faces": cfg.max_faces, "missing": cfg.max_missing_fraction,
              "crop_face_scale": cfg.crop_face_scale}),
        Step("frames", STEP_VERSIONS["frames"], _step_frames(cfg, quiet), [L.FRAMES, L.LANDMARKS], ["media", "track"]),
        Step("cameras", STEP_VERSIONS["cameras"], _step_cameras(cfg, quiet, warn), [L.CAMERAS_NPZ, L.CAMERAS_JSON],
             ["track", "frames"], {"stabilise": cfg.stabilise}),
        Step("masks", STEP_VERSIONS["masks"], _step_masks(cfg, quiet), [L.MASKS, L.BACKGROUND], ["frames"]),
        Step("expressions", STEP_VERSIONS["expressions"], _step_expressions(quiet), [L.EXPRESSIONS], ["track"]),
        face_model_step(quiet, _bar),
    ]
    if cfg.audio:
        steps.append(Step("audio", STEP_VERSIONS["audio"], _step_audio(cfg, quiet, audio_outputs),
                          lambda: list(audio_outputs), ["media", "frames"],
                          {"offset_correction": cfg.offset_correction, "natural_lead": cfg.natural_lead_frames,
                           "api": [compute is not None, estimate is not None]}))
    steps += [
        Step("split", STEP_VERSIONS["split"], _step_split(cfg), [L.SPLIT_JSON, L.TRANSFORMS_TRAIN, L.TRANSFORMS_VAL],
             ["cameras"], {"val_fraction": cfg.val_fraction}),
        Step("report", STEP_VERSIONS["report"], _step_report(cfg, quiet), [L.CONTACT_SHEET, L.CURVES, L.SUMMARY],
             [s.name for s in steps] + ["split"]),
    ]
    try:
        for step in steps:
            runner.run(step, force=force)
    except BaseException:
        if created:                     # a refused first run leaves no empty subject folder behind
            remove_empty_folders(root)
        raise
    _write_subject_json(runner, cfg, video)
    summary = json.loads(runner.path(L.SUMMARY).read_text())
    return PrepareResult(root, runner.info["media"]["n_frames"], summary, runner.ran, runner.skipped,
                         time.perf_counter() - start)
