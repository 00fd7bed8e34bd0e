"""Generate a synthetic talking-head clip with exact ground truth.

Output folder layout (see docs/synthetic.md):
    video.mp4          H.264 yuv420p, ``fps`` fps, AAC mono audio muxed
    audio.wav          the exact driving audio, 16-bit PCM mono
    ground_truth.json  per-frame camera, head pose, mouth/eye/brow parameters (deterministic bytes)
    ground_truth.npz   the same arrays + projected landmarks, label maps and packed masks
    meta.json          run information that is not deterministic (time taken, paths, versions)
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talksplat import __version__
from talksplat.errors import TalksplatError, UsageError
from talksplat.io import VideoWriter, atomic_path, fit_length, load_audio, save_wav, write_bytes_atomic
from talksplat.synthetic import motion
from talksplat.synthetic import template as T
from talksplat.synthetic.config import SynthConfig
from talksplat.synthetic.render import Renderer
from talksplat.synthetic.rig import Camera, FaceParams, HeadRig, matrix_to_euler, matrix_to_rotvec

AUDIO_DIR = Path(__file__).resolve().parent.parent / "assets" / "audio"
FORMAT = "talksplat.synthetic/1"
SYNTHETIC_NOTE = ("Synthetic test video made by talksplat synth from a public-domain NASA photo and "
                  "unrelated speech; the person shown never said this.")
VIDEO_NAME, AUDIO_NAME = "video.mp4", "audio.wav"
GT_JSON, GT_NPZ, META_JSON = "ground_truth.json", "ground_truth.npz", "meta.json"


@dataclass(frozen=True)
class SynthResult:
    """Where the outputs went and a few numbers about them."""

    out_dir: Path
    video: Path
    audio: Path
    ground_truth_json: Path
    ground_truth_npz: Path
    meta: Path
    num_frames: int
    duration: float
    seconds_taken: float


def bundled_clips() -> list[dict[str, object]]:
    """The bundled speech clips with their attribution records (assets/audio/clips.json)."""
    clips = json.loads((AUDIO_DIR / "clips.json").read_text())
    for clip in clips:
        clip["path"] = str(AUDIO_DIR / str(clip["file"]))
    return clips


def _driving_audio(cfg: SynthConfig) -> tuple[np.ndarray, int, list[dict[str, object]]]:
    """Audio (N,) float32 at cfg.sample_rate, exactly num_frames / fps long, + its sources."""
    sr, fps = cfg.sample_rate, cfg.fps
    if cfg.audio is not None:
        samples = load_audio(cfg.audio, sr)
        if samples.size == 0:
            raise UsageError(f"{cfg.audio} contains no audio samples")
        seconds = cfg.seconds if cfg.seconds is not None else samples.size / sr
        num_frames = max(round(seconds * fps), 1)
        sources = [{"file": Path(cfg.audio).name, "note": "user-supplied audio"}]
        return fit_length(samples, num_frames * sr // fps), num_frames, sources
    assert cfg.seconds is not None
    num_frames = max(round(cfg.seconds * fps), 1)
    need = num_frames * sr // fps
    clips = bundled_clips()
    start = cfg.seed % len(clips)
    parts: list[np.ndarray] = []
    sources: list[dict[str, object]] = []
    total, i = 0, 0
    gap = np.zeros(int(0.4 * sr), np.float32)
    while total < need:
        clip = clips[(start + i) % len(clips)]
        samples = load_audio(str(clip["path"]), sr)
        parts += [samples, gap]
        total += samples.size + gap.size
        if i < len(clips):
            sources.append({k: v for k, v in clip.items() if k != "path"})
        i += 1
    return fit_length(np.concatenate(parts), need), num_frames, sources


def _round(x: object, nd: int) -> object:
    """Round floats in nested lists/arrays for a compact, stable JSON."""
    if isinstance(x, np.ndarray):
        x = x.tolist()
    if isinstance(x, float):
        r = round(x, nd)
        return 0.0 if r == 0 else r
    if isinstance(x, (list, tuple)):
        return [_round(v, nd) for v in x]
    return x


def generate(cfg: SynthConfig, out_dir: str | Path,
             progress: Callable[[int, int], None] | bool = False) -> SynthResult:
    """Render the clip described by ``cfg`` into ``out_dir`` (created if needed).

    ``progress`` is True for a tqdm bar, or a callback (done, total) called after each frame.
    """
    t_start = time.perf_counter()
    cfg.validate()
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TalksplatError(f"cannot create output folder {out}: {exc.strerror}") from exc
    seeds = np.random.SeedSequence(cfg.seed).spawn(5)
    rng_backdrop, rng_head, rng_blink, rng_brow, rng_grain = (np.random.default_rng(s) for s in seeds)

    audio, n, sources = _driving_audio(cfg)
    fps, sr, size = cfg.fps, cfg.sample_rate, cfg.size

    # Driving curves.
    rms_db = motion.frame_rms_db(audio, sr, fps, n)
    phones = motion.decode_phones(audio, sr) if cfg.use_phones else []
    mouth, phone_labels = motion.mouth_track(rms_db, phones, fps, cfg.lead_frames)
    blink_r, blink_l = motion.blink_track(n, fps, rng_blink, cfg.blink_interval)
    loud = motion.loudness(rms_db)
    brow = motion.brow_track(n, fps, rng_brow, loud)
    head = motion.head_track(n, fps, rng_head, loud, cfg.head_motion)

    f = cfg.focal_factor * size
    cam = Camera(f, f, (size - 1) / 2.0, (size - 1) / 2.0, size, size)
    rig = HeadRig(cam, framing=cfg.framing)
    renderer = Renderer(rig, rng_backdrop, cfg.supersample)

    rot = np.zeros((n, 3, 3))
    trans = np.zeros((n, 3))
    gap_mm = np.zeros(n)
    gap_px = np.zeros(n)
    lms = np.zeros((n, T.NUM_MESH_VERTICES, 2), np.float32)
    labels = np.zeros((n, size, size), np.uint8) if cfg.masks else None
    coverage = np.zeros((n, size, size), np.uint8) if cfg.masks else None

    bar = None
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(total=n, unit="frame", desc="synth", leave=False)
    video_path = out / VIDEO_NAME
    tags = {"title": "talksplat synthetic speaker", "comment": SYNTHETIC_NOTE}
    with VideoWriter(video_path, size, size, fps=fps, audio=audio, sample_rate=sr, crf=cfg.crf,
                     metadata=tags) as writer:
        for i in range(n):
            params = FaceParams(mouth_open=float(mouth[i]), blink_right=float(blink_r[i]),
                                blink_left=float(blink_l[i]), brow_raise=float(brow[i]))
            r, t = rig.pose(head.pitch[i], head.yaw[i], head.roll[i], head.shift_mm[i])
            v = rig.deform(params)
            frame = renderer.render(v, r, t)
            img = frame.image
            if cfg.grain > 0:
                noise = rng_grain.standard_normal((size, size, 1), dtype=np.float32) * cfg.grain
                img = img + noise
            writer.write(np.clip(np.round(img), 0, 255).astype(np.uint8))
            rot[i], trans[i] = r, t
            gap_mm[i] = v[T.LOWER_LIP_CENTER, 1] - v[T.UPPER_LIP_CENTER, 1]
            gap_px[i] = frame.mouth_open_px
            lms[i] = frame.landmarks
            if labels is not None and coverage is not None:
                labels[i] = frame.labels
                coverage[i] = np.round(np.clip(frame.coverage, 0, 1) * 255).astype(np.uint8)
            if bar is not None:
                bar.update(1)
            elif callable(progress):
                progress(i + 1, n)
    if bar is not None:
        bar.close()
    audio_path = save_wav(out / AUDIO_NAME, audio, sr)

    euler = np.array([matrix_to_euler(r) for r in rot])
    rotvec = np.array([matrix_to_rotvec(r) for r in rot])
    per_frame = {
        "time_s": np.arange(n) / fps,
        "intrinsics": np.tile([cam.fx, cam.fy, cam.cx, cam.cy], (n, 1)),
        "rotation": rot,
        "rotvec": rotvec,
        "euler_deg": np.degrees(euler),
        "translation_mm": trans,
        "mouth_open": mouth,
        "mouth_open_mm": gap_mm,
        "mouth_open_px": gap_px,
        "blink_left": blink_l,
        "blink_right": blink_r,
        "brow_raise": brow,
        "audio_rms_db": rms_db,
    }
    digits = {"rotation": 6, "rotvec": 6, "euler_deg": 4, "intrinsics": 4, "time_s": 4}
    gt = {
        "format": FORMAT,
        "note": SYNTHETIC_NOTE,
        "num_frames": n,
        "fps": fps,
        "duration_s": n / fps,
        "width": size,
        "height": size,
        "config": cfg.to_json(),
        "files": {"video": VIDEO_NAME, "audio": AUDIO_NAME, "arrays": GT_NPZ},
        "audio": {"sample_rate": sr, "num_samples": int(audio.size), "sources": sources,
                  "frame_window": "frame t covers samples [t*sr/fps, (t+1)*sr/fps)",
                  "mouth_lead_frames": cfg.lead_frames, "phones_used": bool(phones)},
        "camera": {"model": "pinhole", "fx": cam.fx, "fy": cam.fy, "cx": cam.cx, "cy": cam.cy,
                   "width": size, "height": size, "distortion": None,
                   "convention": "OpenCV: x right, y down, z forward; pixel centres at integers"},
        "head": {"convention": "X_cam = R @ X_head + t, millimetres; head frame: origin between "
                               "landmarks 234 and 454, x to the subject's left, y down, z into the head",
                 "euler": "euler_deg = [pitch, yaw, roll] with R = Rz(roll) @ Ry(yaw) @ Rx(pitch)",
                 "rest_rotation": _round(rig.r_rest, 6), "rest_translation_mm": _round(rig.t_rest, 4),
                 "neck_pivot_mm": list(rig.NECK_PIVOT_MM), "mouth_closed_gap_mm": 0.0,
                 "mouth_max_gap_mm": rig.MAX_GAP_MM,
                 "photo_gap_mm": round(rig.gap_rest_mm, 4)},
        "labels": T.LABEL_VALUES,
        "frames": {k: _round(np.asarray(v, dtype=np.float64), digits.get(k, 5)) for k, v in per_frame.items()},
    }
    gt["frames"]["phone"] = phone_labels
    gt_json = out / GT_JSON
    write_bytes_atomic(gt_json, (json.dumps(gt, indent=1, sort_keys=False) + "\n").encode())

    arrays: dict[str, np.ndarray] = {k: np.asarray(v, np.float32) for k, v in per_frame.items()}
    arrays["landmarks_2d"] = lms
    arrays["template_head_mm"] = rig.v_rest[: T.NUM_MESH_VERTICES].astype(np.float32)
    arrays["rest_rotation"] = rig.r_rest.astype(np.float32)
    arrays["rest_translation_mm"] = rig.t_rest.astype(np.float32)
    if labels is not None and coverage is not None:
        face = np.isin(labels, T.FACE_LABELS)
        arrays["labels"] = labels
        arrays["coverage"] = coverage
        arrays["mask_face"] = np.packbits(face, axis=-1)
        arrays["mask_inside_mouth"] = np.packbits(labels == T.LABEL_VALUES["inside_mouth"], axis=-1)
        arrays["mask_background"] = np.packbits(labels == T.LABEL_VALUES["background"], axis=-1)
    gt_npz = out / GT_NPZ
    with atomic_path(gt_npz) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)

    taken = time.perf_counter() - t_start
    meta = {"generator": f"talksplat {__version__}", "created_unix": time.time(), "seconds_taken": taken,
            "out_dir": str(out.resolve()), "audio_input": str(Path(cfg.audio).resolve()) if cfg.audio else None,
            "python": platform.python_version(), "machine": platform.machine(),
            "face_asset_sha256": T.asset_sha256()}
    meta_path = out / META_JSON
    write_bytes_atomic(meta_path, (json.dumps(meta, indent=1) + "\n").encode())
    return SynthResult(out, video_path, audio_path, gt_json, gt_npz, meta_path, n, n / fps, taken)


def load_ground_truth(out_dir: str | Path) -> dict[str, np.ndarray]:
    """Arrays of ``ground_truth.npz`` with the packed masks unpacked to (T, H, W) bool."""
    out = Path(out_dir)
    with np.load(out / GT_NPZ) as data:
        arrays = {k: data[k] for k in data.files}
    if "labels" in arrays:
        width = arrays["labels"].shape[-1]
        for key in ("mask_face", "mask_inside_mouth", "mask_background"):
            arrays[key] = np.unpackbits(arrays[key], axis=-1, count=width).astype(bool)
    return arrays
