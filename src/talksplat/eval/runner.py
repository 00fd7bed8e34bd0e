"""``talksplat eval``: score a trained avatar, writing ``report.md``, ``metrics.json`` and plots.

Two modes (docs/eval.md):

- **self-reconstruction** (default): every held-out frame (the last 10% of the clip, never trained
  on) is rendered with its own camera, audio, expression and backdrop (``Avatar.render_own``, as the
  trainer's held-out scores), so render and ground truth are comparable pixel for pixel: image quality,
  landmark distances, expression error, lip-opening agreement, lip sync, stability.
- **cross-driven** (``audio=OTHER.wav``): the whole clip is rendered with ``Renderer.render_frames``
  (poses ping-ponged over the training frames); there is no ground truth, so only lip sync, mouth
  opening vs audio envelope and stability are scored, next to the same figures of the real
  training video as the reference.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from talksplat.core.constants import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from talksplat.core.pixels import rescale_pixels
from talksplat.engine.checkpoint import latest_checkpoint, read_meta
from talksplat.errors import TalksplatError, UsageError
from talksplat.eval import metrics as M
from talksplat.eval import signals as S
from talksplat.io.paths import require_writable_folder
from talksplat.render.renderer import Renderer

EVAL_FORMAT = "talksplat.eval"
EVAL_FORMAT_VERSION = 1
LABELS = {
    "sync": "talksplat A/V offset scorer (per-lag lip-shape regression, no weights; not SyncNet Sync-C / LSE-C)",
    "expression": ("expression error on the 7 landmark core coefficients (an AUE analogue; "
                   "not OpenFace action units)"),
    "lpips_missing": "not computed: no local backbone weights (pass --lpips-weights DIR)",
    "lpips": "LPIPS (AlexNet, v0.1 linear layers) from the user's local weights",
    "lmd": "LMD: MediaPipe FaceMesh landmarks of render vs ground truth, mean Euclidean distance, no alignment",
    "stability": ("GaussianFlameTalk Sec. 3.3 stability on the nose trajectory; each component normalised by "
                  "its maximum over both videos (ours and the reference); higher = less stable"),
    "eyes": ("eye aspect ratio (EAR, mean of both eyes: three lid gaps over the corner distance) of FaceMesh "
             "landmarks tracked on each video; a blink = EAR below "
             f"{M.BLINK_CLOSURE:g} x that video's median, closures "
             f"<= {M.BLINK_MERGE_GAP} frames apart merged"),
    "mouth_interior": ("inside the inner-lip polygon (ground-truth landmarks in self-reconstruction; each "
                       "video's own tracked landmarks cross-driven): PSNR and gradient energy (mean squared "
                       "Sobel magnitude of the luminance, a sharpness proxy, not a perceptual teeth score)"),
}
# A mouth interior smaller than this fraction of the frame (lips nearly closed) is not scored.
MIN_MOUTH_INTERIOR_FRACTION = 2.5e-4


@dataclass
class StabilityConfig:
    cutoff_hz: float = M.STABILITY_CUTOFF_HZ
    fft_window: int = M.STABILITY_FFT_WINDOW
    variability_window: int = M.STABILITY_VARIABILITY_WINDOW


@dataclass
class EvalConfig:
    landmark_size: int = 256            # frames are resized to this square size for FaceMesh; LMD is in its pixels
    psnr_cap_db: float = M.PSNR_CAP_DB  # PSNR of identical images
    max_frames: int | None = None       # self-reconstruction: score only the first N held-out frames
    reference_max_seconds: float = 60.0  # cross-driven: seconds of the real video scored as the reference
    lpips_weights: Path | None = None   # folder with AlexNet + LPIPS linear weights (else LPIPS is skipped)
    pose: str = "loop"                  # cross-driven: RenderOptions.pose ("loop" or "still")
    stability: StabilityConfig = field(default_factory=StabilityConfig)
    progress: bool = True

    def validate(self) -> None:
        if self.landmark_size < 128:
            raise UsageError(f"--landmark-size must be at least 128 (FaceMesh misses small faces), "
                             f"got {self.landmark_size}")
        if self.max_frames is not None and self.max_frames < M.STABILITY_MIN_FRAMES:
            raise UsageError(f"--max-frames must be at least {M.STABILITY_MIN_FRAMES}, got {self.max_frames}")
        if self.reference_max_seconds <= 0:
            raise UsageError("the reference length must be positive")
        if self.pose not in ("loop", "still"):
            raise UsageError(f"pose must be 'loop' or 'still', got {self.pose!r}")
        if self.lpips_weights is not None and not Path(self.lpips_weights).is_dir():
            raise UsageError(f"LPIPS weights folder {self.lpips_weights} does not exist")


@dataclass
class _Clip:
    """What was rendered and tracked, kept for the plots and the landmark file."""

    frames: np.ndarray                       # (T,) subject frame index (self) or output frame (cross)
    ours: np.ndarray                         # (T, 478, 3) landmarks of the render
    reference: np.ndarray                    # (Tr, 478, 3) landmarks of the real frames
    samples: np.ndarray                      # driving audio of ``ours``
    reference_samples: np.ndarray            # audio of the reference frames
    per_frame: dict[str, list] = field(default_factory=dict)
    render_seconds: list[float] = field(default_factory=list)


def default_out_dir(subject_dir: Path, audio: Path | None) -> Path:
    """SUBJECT/eval for self-reconstruction, SUBJECT/eval/driven-<audio stem> for cross-driven audio."""
    base = Path(subject_dir) / "eval"
    return base if audio is None else base / f"driven-{Path(audio).stem}"


def evaluate_subject(subject_dir: Path, run_dir: Path | None = None, audio: Path | None = None,
                     out_dir: Path | None = None, config: EvalConfig | None = None,
                     recipe: str | None = None) -> dict:
    """Evaluates the trained avatar of ``subject_dir`` and writes the report (see the module docstring).

    Args:
        subject_dir: a prepared subject with a trained run; run_dir: the run (default
            SUBJECT/runs/RECIPE); audio: driving speech for the cross-driven mode (None =
            self-reconstruction on the held-out frames); out_dir: default :func:`default_out_dir`.
    Returns:
        the metrics dictionary also written to ``out_dir/metrics.json``.
    """
    config = config or EvalConfig()
    config.validate()
    subject_dir = Path(subject_dir)
    if audio is not None and not Path(audio).is_file():
        raise UsageError(f"audio file {audio} does not exist")
    if not (subject_dir / "subject.json").is_file():
        raise UsageError(f"{subject_dir} is not a prepared subject (no subject.json); "
                         f"run `talksplat prepare VIDEO -o {subject_dir}` first")
    out = Path(out_dir) if out_dir else default_out_dir(subject_dir, audio)
    require_writable_folder(out, "output folder", "pass -o DIR")   # before minutes of rendering, not after
    lpips_model = None
    if config.lpips_weights is not None:
        from talksplat.eval.lpips import load_lpips

        lpips_model = load_lpips(Path(config.lpips_weights))
    samples = None if audio is None else _driving_samples(Path(audio))   # bad audio fails before the model loads
    renderer = Renderer.open(subject_dir, recipe, run_dir)
    run = renderer.avatar.run.run_dir
    if audio is None:
        result, clip = _self_reconstruction(renderer, config, lpips_model)
    else:
        result, clip = _cross_driven(renderer, Path(audio), samples, config)
    result = {"format": EVAL_FORMAT, "format_version": EVAL_FORMAT_VERSION, "subject": str(subject_dir.resolve()),
              "run": str(run.resolve()), "recipe": renderer.avatar.recipe_name, **result,
              "efficiency": {**training_cost(run), **render_speed(clip.render_seconds, renderer.data.size)},
              "labels": LABELS, "config": _jsonable(asdict(config))}
    write_outputs(out, result, clip, config)
    return result


# ---------------------------------------------------------------------------------------------- modes


def _uint8(image: torch.Tensor) -> np.ndarray:
    return (image.clamp(0, 1).numpy() * 255).round().astype(np.uint8)


def _image_scores(rendered: np.ndarray, truth: np.ndarray, cap_db: float, lpips_model) -> dict[str, float]:
    scores = {"psnr": M.psnr(rendered, truth, cap_db), "ssim": M.ssim(rendered, truth),
              "ms_ssim": M.ms_ssim(rendered, truth)}
    if lpips_model is not None:
        scores["lpips"] = lpips_model.distance(rendered, truth)
    return scores


def _progress(iterable, total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="frame", disable=not enabled, dynamic_ncols=True)


def _subject_audio(renderer) -> np.ndarray:
    from talksplat.io.audio import load_audio

    path = renderer.subject_dir / "audio" / "audio.wav"
    if not path.is_file():
        raise TalksplatError(f"{path} is missing; re-run `talksplat prepare` on a video with sound")
    return load_audio(path, SAMPLE_RATE)


def _audio_slice(samples: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Samples of frames [start, stop), zero-padded past the end."""
    out = np.zeros((stop - start) * SAMPLES_PER_FRAME, np.float32)
    part = samples[start * SAMPLES_PER_FRAME: stop * SAMPLES_PER_FRAME]
    out[:part.size] = part
    return out


@torch.no_grad()
def _self_reconstruction(renderer, config: EvalConfig, lpips_model) -> tuple[dict, _Clip]:
    data, avatar = renderer.data, renderer.avatar
    frames = np.asarray(data.val_frames)[:config.max_frames]
    if len(frames) < M.STABILITY_MIN_FRAMES:
        raise TalksplatError(f"the subject has only {len(frames)} held-out frames; at least "
                             f"{M.STABILITY_MIN_FRAMES} are needed (prepare a longer clip)")
    per_frame: dict[str, list] = {"frame": [int(t) for t in frames]}
    ours, truth_lms, seconds = [], [], []
    fixed_backdrop = data.backdrop(int(data.train_frames[0]))
    with S.LandmarkTracker(config.landmark_size) as track_ours, S.LandmarkTracker(config.landmark_size) as track_gt:
        for t in _progress(frames, len(frames), "eval: rendering held-out frames", config.progress):
            tic = time.perf_counter()
            out = avatar.render_own(int(t))
            image = out["image"]
            seconds.append(time.perf_counter() - tic)
            rendered, truth = _uint8(image), _uint8(data.image(int(t)))
            scores = {f"{k}_full": v for k, v in _image_scores(rendered, truth, config.psnr_cap_db, lpips_model).items()}
            box = data.head_box(int(t))
            if box is not None:
                head = _image_scores(rendered[box], truth[box], config.psnr_cap_db, lpips_model)
                scores["head_box_px"] = min(rendered[box].shape[:2])
            else:                          # no head labels in this frame: keep the per-frame lists aligned
                head = {k[:-5]: math.nan for k in scores}
                scores["head_box_px"] = math.nan
            scores.update({f"{k}_head": v for k, v in head.items()})
            scores.update(_region_scores(rendered, truth, _truth_landmarks(data, int(t)), config.psnr_cap_db))
            for k, v in scores.items():
                per_frame.setdefault(k, []).append(v)
            # Motion metrics track the render over a fixed backdrop: a frame's own backdrop (its real
            # torso and neck) outlines the real jaw, which leaks the real mouth opening.
            tracked = _uint8(out["head"] + (1.0 - out["alpha"]) * fixed_backdrop)
            ours.append(track_ours(tracked))
            truth_lms.append(track_gt(truth))
            # (the interior's gradient energy here comes from the ground truth's polygon, above)
            for key, frame, landmarks in (("teeth_ours", tracked, ours[-1]), ("teeth_truth", truth, truth_lms[-1])):
                teeth = _own_mouth(frame, landmarks, config.landmark_size, gradient=False)["teeth"]
                per_frame.setdefault(key, []).append(teeth)
    samples = _audio_slice(_subject_audio(renderer), int(frames[0]), int(frames[-1]) + 1)
    clip = _Clip(frames, np.stack(ours), np.stack(truth_lms), samples, samples, per_frame, seconds)
    result = {
        "mode": "self",
        "frames": {"evaluated": len(frames), "first": int(frames[0]), "last": int(frames[-1]),
                   "size": data.size, "landmark_size": config.landmark_size},
        "image": _image_summary(per_frame, data.size, config, lpips_model is not None),
        "motion": _motion_summary(clip, renderer.subject_dir, config),
        "sync": _sync_summary(clip),
        "stability": _stability_summary(clip, config),
        "eyes": _eyes_summary(clip, per_frame),
        "mouth_interior": _mouth_interior_summary(per_frame, "ground truth (same frames)"),
    }
    result["mouth_interior"]["teeth_by_opening"] = M.teeth_by_opening(
        S.lip_opening(clip.ours), per_frame["teeth_ours"], S.lip_opening(clip.reference), per_frame["teeth_truth"],
        paired=True)
    return result, clip


def _truth_landmarks(data, t: int) -> np.ndarray | None:
    """Prepare's landmarks of real frame t in pixels of the training size."""
    return data.landmarks_px(t)


def _region_scores(rendered: np.ndarray, truth: np.ndarray, landmarks: np.ndarray | None, cap_db: float) -> dict:
    """Eye-region PSNR and mouth-interior PSNR / gradient energy of one frame (NaN where not measurable:
    no landmarks, or lips too close to hold an interior)."""
    out = {"psnr_eyes": math.nan, "mouth_interior_px": 0, "psnr_mouth_interior": math.nan,
           "gradient_mouth_ours": math.nan, "gradient_mouth_truth": math.nan}
    if landmarks is None:
        return out
    shape = rendered.shape[:2]
    out["psnr_eyes"] = M.masked_psnr(rendered, truth, M.eye_region_mask(landmarks, shape), cap_db)
    mouth = M.mouth_interior_mask(landmarks, shape)
    out["mouth_interior_px"] = int(mouth.sum())
    if mouth.sum() >= MIN_MOUTH_INTERIOR_FRACTION * mouth.size:
        out["psnr_mouth_interior"] = M.masked_psnr(rendered, truth, mouth, cap_db)
        out["gradient_mouth_ours"] = M.gradient_energy(rendered, mouth)
        out["gradient_mouth_truth"] = M.gradient_energy(truth, mouth)
    return out


def _own_mouth(frame: np.ndarray, landmarks: np.ndarray, landmark_size: int,
               gradient: bool = True) -> dict[str, float]:
    """Teeth share and (``gradient``) gradient energy inside a frame's own tracked inner-lip polygon
    (NaN: no face or lips closed)."""
    lm = rescale_pixels(np.asarray(landmarks)[:, :2], frame.shape[0] / landmark_size)
    mouth = M.mouth_interior_mask(lm, frame.shape[:2])
    if mouth.sum() < MIN_MOUTH_INTERIOR_FRACTION * mouth.size:
        return {"gradient": math.nan, "teeth": math.nan}
    return {"gradient": M.gradient_energy(frame, mouth) if gradient else math.nan, "teeth": M.teeth_share(frame, mouth)}


@torch.no_grad()
def _driving_samples(audio: Path) -> np.ndarray:
    """The driving speech, checked: decodable, not too long, long enough for the stability score."""
    from talksplat.features.audio import num_frames_for_samples
    from talksplat.render.renderer import load_driving_audio

    samples = load_driving_audio(audio)
    if num_frames_for_samples(len(samples)) < M.STABILITY_MIN_FRAMES:
        raise UsageError(f"{audio} is {len(samples) / SAMPLE_RATE:.2f} s long; at least "
                         f"{M.STABILITY_MIN_FRAMES / FPS:.2f} s is needed")
    return samples


def _cross_driven(renderer, audio: Path, samples: np.ndarray, config: EvalConfig) -> tuple[dict, _Clip]:
    from talksplat.features.audio import num_frames_for_samples
    from talksplat.render.renderer import RenderOptions

    n = num_frames_for_samples(len(samples))
    data = renderer.data
    ours, seconds, gradient_ours, teeth_ours = [], [], [], []
    # the expression source `talksplat render` uses by default (SyncTalk++: generated from the audio)
    options = renderer.check_options(RenderOptions(pose=config.pose,
                                                   expression=renderer.conditioner.default_expression))
    generator = renderer.render_frames(samples, options)
    with S.LandmarkTracker(config.landmark_size) as tracker:
        for _ in _progress(range(n), n, "eval: rendering the driven clip", config.progress):
            tic = time.perf_counter()
            frame = next(generator)
            seconds.append(time.perf_counter() - tic)
            ours.append(tracker(frame))
            mouth = _own_mouth(frame, ours[-1], config.landmark_size)
            gradient_ours.append(mouth["gradient"])
            teeth_ours.append(mouth["teeth"])
    n_ref = min(data.n_frames, max(M.STABILITY_MIN_FRAMES, round(config.reference_max_seconds * FPS)))
    reference, gradient_ref, teeth_ref = [], [], []
    with S.LandmarkTracker(config.landmark_size) as tracker:
        for t in _progress(range(n_ref), n_ref, "eval: tracking the real video", config.progress):
            real = _uint8(data.image(t))
            reference.append(tracker(real))
            mouth = _own_mouth(real, reference[-1], config.landmark_size)
            gradient_ref.append(mouth["gradient"])
            teeth_ref.append(mouth["teeth"])
    ref_samples = _audio_slice(_subject_audio(renderer), 0, n_ref)
    clip = _Clip(np.arange(n), np.stack(ours), np.stack(reference), _audio_slice(samples, 0, n), ref_samples,
                 {"frame": list(range(n)), "gradient_mouth_ours": gradient_ours}, seconds)
    # the source frame each output frame replays (pose, expression, blinks): the fair blink reference
    replayed = np.array([renderer.source_index(i, options) for i in range(n)])
    result = {
        "mode": "cross",
        "audio": str(Path(audio).resolve()),
        "frames": {"evaluated": n, "reference_frames": n_ref, "size": data.size,
                   "landmark_size": config.landmark_size, "pose": config.pose},
        "image": {"not_applicable": "cross-driven: there is no ground-truth video for this audio"},
        "motion": {"not_applicable": "cross-driven: there is no ground-truth video for this audio"},
        "sync": _sync_summary(clip),
        "stability": _stability_summary(clip, config),
        "eyes": _eyes_summary(clip, clip.per_frame, replayed),
        "mouth_interior": {"label": LABELS["mouth_interior"],
                           "psnr": None, "not_applicable": "cross-driven: no ground truth for a PSNR",
                           "gradient_energy_ours": _mean(gradient_ours), "gradient_energy_reference": _mean(gradient_ref),
                           "sharpness_ratio": _ratio(_mean(gradient_ours), _mean(gradient_ref)),
                           "frames_ours": int(np.isfinite(gradient_ours).sum()),
                           "frames_reference": int(np.isfinite(gradient_ref).sum()),
                           "reference": "real training video (reference)",
                           "teeth_by_opening": M.teeth_by_opening(S.lip_opening(clip.ours), teeth_ours,
                                                                  S.lip_opening(clip.reference), teeth_ref)},
    }
    return result, clip


# ---------------------------------------------------------------------------------------------- summaries


def _mean(values) -> float:
    x = np.asarray(values, np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else math.nan


def _ratio(a: float, b: float) -> float:
    return a / b if math.isfinite(a) and math.isfinite(b) and b > 0 else math.nan


def _eyes_summary(clip: _Clip, per_frame: dict[str, list], replayed: np.ndarray | None = None) -> dict:
    """Blinks per minute and the EAR distribution of ours and the reference, and (self-reconstruction)
    the eye-region PSNR. Cross-driven, ``replayed`` (the source frame of each output frame) also gives
    the reference over exactly the frames the render replays: a render that loops 14 s of a 26 s clip
    replays that stretch's blinks, which may be more or fewer than the whole clip's rate."""
    ear_ours, ear_ref = S.eye_aspect_ratio(clip.ours), S.eye_aspect_ratio(clip.reference)
    per_frame["ear_ours"], per_frame["ear_reference"] = ear_ours.tolist(), ear_ref.tolist()
    ours, ref = M.blink_statistics(ear_ours), M.blink_statistics(ear_ref)
    out = {"label": LABELS["eyes"], "ours": ours, "reference": ref, "closure": M.BLINK_CLOSURE,
           "blink_rate_ratio": _ratio(ours["blinks_per_minute"] or 0.0, ref["blinks_per_minute"] or 0.0),
           "ear_p5_difference": (ours["ear_p5"] - ref["ear_p5"]
                                 if ours["ear_p5"] is not None and ref["ear_p5"] is not None else None)}
    if replayed is not None and len(replayed) and int(replayed.max()) < len(ear_ref):
        # each series closes below a fraction of its own median EAR, as everywhere
        same = M.blink_statistics(ear_ref[replayed])
        out["reference_replayed"] = same
        out["blink_rate_ratio_replayed"] = _ratio(ours["blinks_per_minute"] or 0.0, same["blinks_per_minute"] or 0.0)
    if "psnr_eyes" in per_frame:
        out["psnr_eye_region"] = _mean(per_frame["psnr_eyes"])
        out["psnr_eye_region_frames"] = int(np.isfinite(per_frame["psnr_eyes"]).sum())
    return out


def _mouth_interior_summary(per_frame: dict[str, list], reference: str) -> dict:
    ours, truth = _mean(per_frame["gradient_mouth_ours"]), _mean(per_frame["gradient_mouth_truth"])
    return {"label": LABELS["mouth_interior"], "psnr": _mean(per_frame["psnr_mouth_interior"]),
            "gradient_energy_ours": ours, "gradient_energy_reference": truth, "sharpness_ratio": _ratio(ours, truth),
            "frames": int(np.isfinite(per_frame["psnr_mouth_interior"]).sum()),
            "min_interior_fraction": MIN_MOUTH_INTERIOR_FRACTION, "reference": reference}


def _image_summary(per_frame: dict[str, list], size: int, config: EvalConfig, with_lpips: bool) -> dict:
    out: dict = {}
    for region in ("full", "head"):
        if not np.isfinite(per_frame[f"psnr_{region}"]).any():
            out[region] = None
            continue
        sides = [size] if region == "full" else np.asarray(per_frame["head_box_px"], np.float64)
        scales = [M.ms_ssim_scales(int(x), int(x)) for x in sides if np.isfinite(x)]
        out[region] = {"psnr": _mean(per_frame[f"psnr_{region}"]), "ssim": _mean(per_frame[f"ssim_{region}"]),
                       "ms_ssim": _mean(per_frame[f"ms_ssim_{region}"]),
                       "ms_ssim_scales": min(scales), "ms_ssim_scales_max": max(scales),
                       "lpips": _mean(per_frame[f"lpips_{region}"]) if with_lpips else None,
                       "frames": int(np.isfinite(per_frame[f"psnr_{region}"]).sum())}
    out["psnr_cap_db"] = config.psnr_cap_db
    out["psnr_capped_frames"] = int(sum(v >= config.psnr_cap_db for v in per_frame.get("psnr_full", [])))
    out["lpips"] = LABELS["lpips"] if with_lpips else LABELS["lpips_missing"]
    return out


def _motion_summary(clip: _Clip, subject_dir: Path, config: EvalConfig) -> dict:
    from talksplat.features.expression import CORE_NAMES

    ours, truth = clip.ours, clip.reference
    both = S.detected(ours) & S.detected(truth)
    clip.per_frame["lmd_all_px"] = M.lmd_per_frame(ours, truth).tolist()
    clip.per_frame["lmd_mouth_px"] = M.lmd_per_frame(ours, truth, S.MOUTH_LANDMARKS).tolist()
    open_ours, open_truth = S.lip_opening(ours), S.lip_opening(truth)
    clip.per_frame["lip_opening_ours"], clip.per_frame["lip_opening_truth"] = open_ours.tolist(), open_truth.tolist()
    raw_ours, raw_truth = S.core_expressions_raw(ours), S.core_expressions_raw(truth)
    zero, one = _expression_mapping(subject_dir, clip.frames, raw_truth)
    expr_ours = S.normalise_expressions(raw_ours, zero, one)
    expr_truth = S.normalise_expressions(raw_truth, zero, one)
    raw_error = M.expression_error(raw_ours, raw_truth, CORE_NAMES)["per_coefficient"]
    return {
        "landmark_size": config.landmark_size,
        "frames_tracked": {"ours": int(S.detected(ours).sum()), "truth": int(S.detected(truth).sum()),
                           "both": int(both.sum()), "of": len(ours)},
        "inter_ocular_px": S.inter_ocular_px(truth),
        "lmd_all_px": M.lmd(ours, truth),
        "lmd_mouth_px": M.lmd(ours, truth, S.MOUTH_LANDMARKS),
        "expression_error": {**M.expression_error(expr_ours, expr_truth, CORE_NAMES), "label": LABELS["expression"],
                             "raw_per_coefficient": raw_error,
                             "raw_unit": "eye aspect ratio (blinks), inter-ocular distances (brows)"},
        "lip_opening": {"correlation": M.pearson(open_ours, open_truth),
                        "mae_iod": _mean(np.abs(open_ours - open_truth)),
                        "unit": "inner-lip gap (13-14) / outer-eye-corner distance (33-263)"},
    }


def _expression_mapping(subject_dir: Path, frames: np.ndarray, raw_truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw -> [0, 1] mapping of the 7 core coefficients: the subject's own (fitted on its whole
    prepared clip, ``expressions.npz`` ``core_raw``), shifted by the median difference between our
    tracking of the evaluated ground-truth frames and prepare's (full-resolution) tracking of the
    same frames, so a tracking bias between the two pipelines does not push values into the clip
    limits. Without ``core_raw``, fitted on the evaluated ground-truth frames themselves."""
    path = Path(subject_dir) / "expressions.npz"
    subject_raw = None
    if path.is_file():
        with np.load(path) as ex:
            if "core_raw" in ex.files:
                subject_raw = np.asarray(ex["core_raw"], np.float64)
    if subject_raw is None or len(subject_raw) <= int(np.max(frames)):
        return S.expression_normalisation(raw_truth)
    zero, one = S.expression_normalisation(subject_raw)
    difference = raw_truth - subject_raw[frames]
    ok = np.all(np.isfinite(difference), axis=1)
    bias = np.median(difference[ok], axis=0) if ok.any() else np.zeros(zero.shape)
    return zero + bias, one + bias


def _sync_of(landmarks: np.ndarray, samples: np.ndarray) -> dict:
    opening = S.lip_opening(landmarks)
    envelope = M.audio_envelope(samples, len(landmarks))
    lag, lag_r = M.lagged_correlation(opening, envelope)
    return {**M.av_sync(landmarks[:, list(S.MOUTH_LANDMARKS), :2], samples),
            "envelope_correlation": M.pearson(opening, envelope),
            "envelope_best_lag_frames": lag, "envelope_best_lag_correlation": lag_r,
            "frames": len(landmarks)}


def _sync_summary(clip: _Clip) -> dict:
    ours = _sync_of(clip.ours, clip.samples)
    reference = _sync_of(clip.reference, clip.reference_samples)
    clip.per_frame["envelope_db"] = M.audio_envelope(clip.samples, len(clip.ours)).tolist()
    clip.per_frame.setdefault("lip_opening_ours", S.lip_opening(clip.ours).tolist())
    return {"label": LABELS["sync"], "ours": ours, "reference": reference}


def _stability_summary(clip: _Clip, config: EvalConfig) -> dict:
    st = config.stability
    tracks = {"ours": S.nose_track(clip.ours), "reference": S.nose_track(clip.reference)}
    usable = {k: v for k, v in tracks.items() if S.detected(v[:, None]).sum() >= 2}
    out: dict = {"label": LABELS["stability"], "cutoff_hz": st.cutoff_hz, "fft_window": st.fft_window,
                 "variability_window": st.variability_window, "landmarks": list(S.NOSE_LANDMARKS)}
    if len(usable) < len(tracks):
        missing = ", ".join(k for k in tracks if k not in usable)
        out["not_computed"] = f"the face was found in fewer than 2 frames of: {missing}"
        return out
    results = M.stability_scores(list(usable.values()), M.FPS, st.cutoff_hz, st.fft_window, st.variability_window)
    for key, res in zip(usable, results, strict=True):
        out[key] = {"score": res.score, "normalised": res.normalised, "raw": res.raw, "frames": res.frames}
    out["normalisers"] = results[0].normalisers
    return out


def training_cost(run: Path) -> dict:
    """Training wall time and iterations of a run, from its latest checkpoint (and summary.json)."""
    out: dict = {"train_seconds": None, "checkpoint_step": None}
    ckpt = latest_checkpoint(Path(run) / "checkpoints")
    if ckpt is not None:
        meta = read_meta(ckpt)
        out["train_seconds"] = meta.get("progress", {}).get("train_seconds")
        out["checkpoint_step"] = meta.get("step")
        out["checkpoint"] = ckpt.name
    summary = Path(run) / "summary.json"
    if summary.is_file():
        s = json.loads(summary.read_text())
        out.update({"summary_train_seconds": s.get("train_seconds"), "iterations": s.get("iterations"),
                    "ms_per_iteration_median": s.get("ms_per_iteration_median"),
                    "train_threads": s.get("threads"), "gaussians": s.get("gaussians")})
    return out


def render_speed(seconds: list[float], size: int) -> dict:
    """Rendering frames per second from per-frame wall times (first frame included: it holds warm-up
    and, cross-driven, the audio features)."""
    total = float(np.sum(seconds))
    return {"render_frames": len(seconds), "render_size": size, "render_threads": torch.get_num_threads(),
            "render_fps": len(seconds) / total if total > 0 else None,
            "render_ms_per_frame_median": float(np.median(seconds)) * 1000 if seconds else None}


# ---------------------------------------------------------------------------------------------- output


def _jsonable(obj):
    """Plain JSON types; NaN and infinities become null."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.bool_ | bool):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    return obj


def write_outputs(out_dir: Path, result: dict, clip: _Clip, config: EvalConfig) -> None:
    """Plots, landmarks.npz, metrics.json and report.md into ``out_dir`` (each written atomically)."""
    from talksplat.eval import plots
    from talksplat.eval.report import render_report
    from talksplat.io.atomic import atomic_path, write_bytes_atomic

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TalksplatError(f"cannot create output folder {out_dir}: {exc.strerror}; pass -o DIR") from exc
    pf = clip.per_frame
    written = []
    if "psnr_full" in pf and "psnr_head" in pf:
        written.append(plots.per_frame_psnr(out_dir / "per_frame_psnr.png", np.asarray(pf["frame"]),
                                            np.asarray(pf["psnr_full"]), np.asarray(pf["psnr_head"]),
                                            config.psnr_cap_db))
    seconds = (np.asarray(pf["frame"], np.float64) + 0.5) / FPS
    written.append(plots.mouth_vs_envelope(out_dir / "mouth_vs_envelope.png", seconds,
                                           np.asarray(pf["lip_opening_ours"]), np.asarray(pf["envelope_db"]),
                                           np.asarray(pf["lip_opening_truth"]) if "lip_opening_truth" in pf else None))
    if "not_computed" not in result["stability"]:
        label = "ground truth" if result["mode"] == "self" else "real training video"
        spectra = {"ours": M.trajectory_spectrum(S.nose_track(clip.ours)),
                   label: M.trajectory_spectrum(S.nose_track(clip.reference))}
        written.append(plots.nose_spectra(out_dir / "nose_spectra.png", spectra, config.stability.cutoff_hz))
    with atomic_path(out_dir / "landmarks.npz") as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, ours=clip.ours, reference=clip.reference, frames=clip.frames)
    result["plots"] = [p.name for p in written]
    result["per_frame"] = pf
    clean = _jsonable(result)
    result.clear()
    result.update(clean)
    write_bytes_atomic(out_dir / "metrics.json", (json.dumps(clean, indent=1) + "\n").encode())
    write_bytes_atomic(out_dir / "report.md", render_report(clean).encode())
