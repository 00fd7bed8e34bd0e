"""SyncTalk++ miniature ablation on one prepared subject (issue 15's acceptance figures).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/synctalkpp.py SUBJECT \
        --run full=RUN_DIR --run no_masked_attention=RUN_DIR --run mel=RUN_DIR \
        --audio A.ogg [B.ogg ...] [--blink-audio LONG.wav] [--name NAME]

Runs are trained beforehand with ``talksplat train SUBJECT --recipe synctalkpp -o RUN_DIR`` and the
same iteration counts (the ablations differ by one ``--set``); the first ``--run`` is the full recipe.

1. Held-out self-reconstruction of every run (``talksplat eval``): PSNR, head-box PSNR, LMD, lip
   opening r, A/V offset.
2. Unseen speech (each ``--audio``), rendered full-frame (paste-back) with a still-free pose loop:
   every run with the full render settings (expression generated from the audio, torso restorer on);
   the full run also without the generator (``--expression video``) and without the restorer. For
   each render: talksplat's A/V offset + confidence (not SyncNet), blinks per minute counted from the
   eye aspect ratio of FaceMesh landmarks on the RENDERED frames, the chin seam statistic
   (render.seam: gradient across the paste-back boundary, rendered / original) and the render speed.
3. The real video's blinks per minute, counted the same way on its own frames, and the blink rate
   the generator asks for (its coefficients) for comparison; ``--blink-audio`` (e.g. several clips
   joined) is rendered by the full run alone, for a blink rate over more than a few blinks.

Writes benchmarks/results/synctalkpp.json under NAME (default: the subject folder's name).
``--speed-ab`` only measures the crop render speed of every ``--run`` in turns (same load for all).

``--acceptance`` instead scores ONE run (``--run full=RUN_DIR``, e.g. the recipe's default schedule) for
the acceptance items, with talksplat's own evaluation throughout:

    .venv/bin/python benchmarks/synctalkpp.py SUBJECT --run full=RUN_DIR --acceptance \
        --audio A.ogg B.ogg [C.ogg] --name NAME [--train-note "wall time, load ..."]

- training: the run's summary (wall seconds, iterations, ms/iteration), plus the note;
- ``talksplat eval`` held out (PSNR, head-box PSNR, lips LMD, mouth-opening r, blinks/min and EAR p5
  vs the real frames, A/V offset) and ``talksplat eval --audio`` per clip (expression = the recipe's
  default, generated; blinks/min, EAR p5 and A/V offset + confidence vs the real video's), with the
  blink rate the generator's coefficients ask for on the same clip;
- the blink response: the 12 training frames with the strongest tracked blinks rendered with their
  own conditions, with the blink coefficients set to 0 and to the generator's blink peak (what a
  generated blink asks for); FaceMesh EAR on each render vs the real frames;
- render speed at 256^2 on the first clip: crop and full-frame (paste-back) wall frames/s, the
  process's CPU milliseconds per frame (all threads; less sensitive to other jobs) and the wall
  milliseconds per frame of each part (conditions, motion field, SH colour, rasterizer, paste-back).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import talksplat  # noqa: F401  - before torch, so talksplat's OpenMP settings apply as for users

# isort: split
import numpy as np
import torch
from _machine import machine_info, save_result

from talksplat.core.constants import FPS, SAMPLES_PER_FRAME
from talksplat.eval import EvalConfig, evaluate_subject
from talksplat.eval import metrics as M
from talksplat.eval import signals as S
from talksplat.features.expression import (
    LEFT_EYE_CORNERS,
    LEFT_EYE_LIDS,
    RIGHT_EYE_CORNERS,
    RIGHT_EYE_LIDS,
    blink_events,
    eye_opening,
)
from talksplat.render.renderer import Renderer, RenderOptions, StageTimer, load_driving_audio
from talksplat.render.seam import SeamMeter

RESULTS = Path(__file__).parent / "results" / "synctalkpp.json"
# A blink: the eye aspect ratio falls below this fraction of the clip's open-eye level (its 90th
# percentile); the same rule for the real and the rendered videos.
BLINK_CLOSURE = 0.3
OPEN_PERCENTILE = 90


def blinks_per_minute(landmarks: np.ndarray) -> dict:
    """Blink events from the eye aspect ratio of FaceMesh landmarks (T, 478, 3), per minute."""
    ear = (eye_opening(landmarks, LEFT_EYE_LIDS, LEFT_EYE_CORNERS) +
           eye_opening(landmarks, RIGHT_EYE_LIDS, RIGHT_EYE_CORNERS)) / 2
    ear = np.where(np.isfinite(ear), ear, np.nanmedian(ear))
    closure = 1.0 - ear / max(float(np.percentile(ear, OPEN_PERCENTILE)), 1e-9)
    events = blink_events(closure, BLINK_CLOSURE)
    minutes = len(landmarks) / FPS / 60
    return {"blinks": len(events), "per_minute": round(len(events) / minutes, 2),
            "seconds": round(len(landmarks) / FPS, 1)}


def _self_eval(subject: Path, name: str, run: Path) -> dict:
    out = subject / "eval" / f"synctalkpp-bench-{name}"
    m = evaluate_subject(subject, run, None, out, EvalConfig(progress=False))
    motion, sync = m["motion"], m["sync"]
    return {"psnr": m["image"]["full"]["psnr"], "psnr_head_box": (m["image"]["head"] or {}).get("psnr"),
            "lmd_mouth_px": motion["lmd_mouth_px"], "lmd_all_px": motion["lmd_all_px"],
            "lip_opening_r": motion["lip_opening"]["correlation"],
            "av_offset": {k: sync["ours"].get(k) for k in ("offset_frames", "confidence", "reliable")},
            "frames": m["frames"]["evaluated"]}


@torch.no_grad()
def _driven(renderer: Renderer, samples: np.ndarray, expression: str, restorer: bool) -> dict:
    """Renders ``samples`` full-frame and scores the rendered video."""
    recipe = renderer.avatar.recipe
    saved = recipe.cfg
    recipe.cfg = replace(saved, torso_restorer=restorer)     # a render-time switch of the loaded avatar
    seam = SeamMeter()
    landmarks, seconds = [], []
    try:
        frames = renderer.render_frames(samples, RenderOptions(expression=expression, full_frame=True), seam)
        with S.LandmarkTracker(256) as tracker:
            while True:
                tic = time.perf_counter()
                frame = next(frames, None)
                if frame is None:
                    break
                seconds.append(time.perf_counter() - tic)
                landmarks.append(tracker(frame))
    finally:
        recipe.cfg = saved
    lms = np.stack(landmarks)
    n = len(lms)
    sync = M.av_sync(lms[:, list(S.MOUTH_LANDMARKS), :2], samples[: n * SAMPLES_PER_FRAME])
    return {"av_offset_frames": sync.get("offset_frames"), "av_confidence": sync.get("confidence"),
            "blinks": blinks_per_minute(lms), "seam": seam.result(),
            "full_frame_fps": round(1.0 / float(np.median(seconds[5:] or seconds)), 1)}


@torch.no_grad()
def _crop_render_fps(renderer: Renderer, samples: np.ndarray, frames: int = 60) -> float:
    """Frames per second of the crop render (audio encoder + generated expression + splatting +
    restorer), no paste-back or encoding."""
    it = renderer.render_frames(samples[: frames * SAMPLES_PER_FRAME], RenderOptions(expression="generated"))
    times = []
    while True:
        tic = time.perf_counter()
        if next(it, None) is None:
            break
        times.append(time.perf_counter() - tic)
    return round(1.0 / float(np.median(times[5:] or times)), 1)


@torch.no_grad()
def _real_blinks(subject: Path) -> dict:
    from talksplat.data.subject import load_subject_data

    data = load_subject_data(subject, 256)
    with S.LandmarkTracker(256) as tracker:
        lms = np.stack([tracker((data.image(t).numpy() * 255).round().astype(np.uint8)) for t in range(data.n_frames)])
    return blinks_per_minute(lms)


def _generator_blink_rate(renderer: Renderer, samples: np.ndarray) -> dict:
    """Blinks per minute in the generator's own coefficients for this audio (before rendering):
    runs of the blink coefficients above half the subject's mean blink-profile peak (the head
    model's blink coefficients are small: 0.41 at the German anchor's blink peaks)."""
    from talksplat.features.expression_generator import blink_peaks

    windows = renderer.audio_windows(samples)
    cond = renderer.conditioner
    blink = np.array([float(cond.conditions(windows, i, 0, "generated")["expression"][:2].mean())
                      for i in range(len(windows))])
    threshold = 0.5 * float(renderer.avatar.recipe.generator.blink_profile.max())
    peaks = blink_peaks(blink, threshold)
    return {"blinks": len(peaks), "per_minute": round(len(peaks) / (len(blink) / FPS / 60), 2),
            "threshold": round(threshold, 3)}


def _update_generator_blinks(subject: Path, run: Path, audios: list[Path], key: str) -> None:
    """Recomputes only the generator's coefficient blink rates of an existing result."""
    all_results = json.loads(RESULTS.read_text())
    renderer = Renderer.open(subject, run=run)
    for audio in audios:
        entry = all_results[key]["driven"].setdefault(audio.name, {})
        entry["generator_coefficient_blinks"] = _generator_blink_rate(renderer, load_driving_audio(audio))
        print(audio.name, entry["generator_coefficient_blinks"])
    RESULTS.write_text(json.dumps(all_results, indent=1, default=str))


# ------------------------------------------------------------------------------------- acceptance
def _eval_figures(m: dict) -> dict:
    """The acceptance figures of one ``talksplat eval`` metrics dictionary (held out or driven)."""
    eyes, sync, motion = m.get("eyes") or {}, m.get("sync") or {}, m.get("motion") or {}
    image = m.get("image") or {}
    pick = ("blinks", "blinks_per_minute", "ear_median", "ear_p5", "ear_min", "seconds")
    out = {"frames": m["frames"],
           "blinks": {side: {k: (eyes.get(side) or {}).get(k) for k in pick} for side in ("ours", "reference")},
           "blink_rate_ratio": eyes.get("blink_rate_ratio"), "ear_p5_difference": eyes.get("ear_p5_difference"),
           "av_offset": {side: {k: (sync.get(side) or {}).get(k) for k in ("offset_frames", "confidence", "reliable")}
                         for side in ("ours", "reference")},
           "render_fps": (m.get("efficiency") or {}).get("render_fps")}
    if image.get("full"):                    # held out (a driven render has no ground truth)
        out.update({"psnr": image["full"]["psnr"], "psnr_head_box": (image.get("head") or {}).get("psnr"),
                    "psnr_eye_region": eyes.get("psnr_eye_region"), "lmd_mouth_px": motion.get("lmd_mouth_px"),
                    "lip_opening_r": (motion.get("lip_opening") or {}).get("correlation")})
    return out


@torch.no_grad()
def _blink_response(subject: Path, run: Path, frames: int = 12) -> dict:
    """EAR of renders of the strongest-blink training frames: own conditions, blink coefficients 0,
    and blink coefficients at the generator's blink peak; the real frames' EAR."""
    from talksplat.recipes import load_avatar
    from talksplat.recipes.synctalkpp import BLINK_COLUMNS

    avatar = load_avatar(subject, run=run)
    recipe, data = avatar.recipe, avatar.subject
    train = np.asarray(data.train_frames)
    shut = train[np.argsort(-data.blink[train])[:frames]]
    peak = float(recipe.generator.blink_profile.max())
    u8 = lambda image: (image.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    renders: dict[str, list] = {"own": [], "blink_0": [], "blink_generator_peak": []}
    for t in map(int, shut):
        conditions = recipe.conditions(t)
        renders["own"].append(u8(avatar.render(t, conditions)["image"]))
        for name, value in (("blink_0", 0.0), ("blink_generator_peak", peak)):
            expression = conditions["expression"].clone()
            expression[list(BLINK_COLUMNS)] = value
            renders[name].append(u8(avatar.render(t, {**conditions, "expression": expression})["image"]))
    real = [u8(data.image(int(t))) for t in shut]
    ear = {name: S.eye_aspect_ratio(np.stack([S.track_landmarks([f], 256)[0] for f in images]))
           for name, images in {**renders, "real": real}.items()}
    return {"frames": [int(t) for t in shut], "tracked_blink_coefficient": np.round(recipe.expressions[torch.as_tensor(shut)][:, list(BLINK_COLUMNS)].mean(1).numpy(), 3).tolist(),
            "generator_blink_peak": round(peak, 3),
            "ear_median": {name: round(float(np.nanmedian(v)), 3) for name, v in ear.items()},
            "ear": {name: np.round(v, 3).tolist() for name, v in ear.items()}}


def _instrument(renderer: Renderer) -> StageTimer:
    """Times the recipe's parts inside each render (wall clock), without changing the model."""
    import talksplat.recipes.synctalkpp as recipe_module

    timer = renderer.timer = StageTimer()
    recipe = renderer.avatar.recipe

    def timed(name: str, function):
        def wrapper(*args, **kwargs):
            with timer(name):
                return function(*args, **kwargs)
        return wrapper

    recipe_module.rasterize = timed("rasterize", recipe_module.rasterize)
    recipe_module.eval_sh = timed("sh_colour", recipe_module.eval_sh)
    recipe.deformation.forward = timed("motion_field", recipe.deformation.forward)
    return timer


@torch.no_grad()
def _render_speed(subject: Path, run: Path, samples: np.ndarray, full_frame: bool, warmup: int = 10) -> dict:
    """Wall frames/s, CPU ms per frame (all threads) and wall ms per frame of each part."""
    import talksplat.recipes.synctalkpp as recipe_module

    saved = (recipe_module.rasterize, recipe_module.eval_sh)
    renderer = Renderer.open(subject, run=run)
    timer = _instrument(renderer)
    try:
        frames = renderer.render_frames(samples, RenderOptions(full_frame=full_frame))
        for _ in range(warmup):
            next(frames)
        timer.seconds.clear()
        cpu, wall = time.process_time(), time.perf_counter()
        count = sum(1 for _ in frames)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        recipe_module.rasterize, recipe_module.eval_sh = saved
        renderer.close()
    parts = {name: round(1000 * sum(values) / count, 1) for name, values in timer.seconds.items()}
    return {"load_average": os.getloadavg(), "frames": count, "fps": round(count / wall, 1), "wall_ms_per_frame": round(1000 * wall / count, 1),
            "cpu_ms_per_frame": round(1000 * cpu / count, 1), "threads": torch.get_num_threads(),
            "wall_ms_per_frame_by_part": parts}


def _render_video_speed(subject: Path, run: Path, audio: Path, full_frame: bool) -> dict:
    """``talksplat render`` end to end (render_video: rendering interleaved with H.264 encoding):
    frames/s and the process's CPU milliseconds per frame, user and system."""
    import tempfile

    from talksplat.render.renderer import render_video

    renderer = Renderer.open(subject, run=run)
    before = os.times()
    with tempfile.TemporaryDirectory() as tmp:
        summary = render_video(renderer, audio, Path(tmp) / "out.mp4", RenderOptions(full_frame=full_frame),
                               progress=False)
    after = os.times()
    renderer.close()
    frames = summary["frames"]
    return {"load_average": os.getloadavg(), "frames": frames, "fps": summary["fps"],
            "cpu_ms_per_frame_user": round(1000 * (after.user - before.user) / frames, 1),
            "cpu_ms_per_frame_system": round(1000 * (after.system - before.system) / frames, 1)}


@torch.no_grad()
def speed_round_robin(subject: Path, runs: dict[str, str], audio: Path, key: str, rounds: int = 3,
                      seconds: float = 10.0) -> None:
    """Crop render speed (no encoding) of several runs measured in turns, so that they share the
    machine's load: frames/s and CPU (user + system) milliseconds per frame per round."""
    samples = load_driving_audio(audio)[: int(seconds * 16_000)]
    renderers = {name: Renderer.open(subject, run=Path(run)) for name, run in runs.items()}
    result: dict = {"machine": machine_info(), "audio": audio.name, "seconds": seconds, "runs": runs,
                    "rounds": {name: [] for name in runs}}
    for _ in range(rounds):
        for name, renderer in renderers.items():
            before = os.times()
            frames = sum(1 for _ in renderer.render_frames(samples, RenderOptions()))
            after = os.times()
            cpu = (after.user - before.user) + (after.system - before.system)
            result["rounds"][name].append({"fps": round(frames / (after.elapsed - before.elapsed), 1),
                                           "cpu_ms_per_frame": round(1000 * cpu / frames, 1),
                                           "load_average_1min": round(os.getloadavg()[0], 2)})
            print(name, result["rounds"][name][-1], flush=True)
            save_result(RESULTS, key, result)


def acceptance(subject: Path, run: Path, audios: list[Path], key: str, note: str) -> None:
    """Scores ``run`` part by part; parts already stored under ``key`` for the same run are kept
    (a rerun after an interruption measures only what is missing)."""
    summary = json.loads((run / "summary.json").read_text())
    stored = json.loads(RESULTS.read_text()).get(key, {}) if RESULTS.exists() else {}
    result: dict = stored if stored.get("run") == str(run) else {}
    result.update({"machine": machine_info(), "subject": str(subject), "run": str(run), "note": note,
                   "training": {k: summary.get(k) for k in ("train_seconds", "iterations", "ms_per_iteration_median",
                                                            "gaussians", "threads", "held_out_by_stage",
                                                            "sync_encoder", "expression_generator")},
                   "iterations_by_stage": json.loads((run / "config.json").read_text()).get("iterations")})
    save_result(RESULTS, key, result)
    speed = result.setdefault("speed_256", {})
    samples = load_driving_audio(audios[0])[: 12 * 16_000]
    for name, full_frame in (("crop", False), ("full_frame", True)):
        if name not in speed:
            speed[name] = _render_speed(subject, run, samples, full_frame)
            save_result(RESULTS, key, result)
        print(json.dumps({name: speed[name]}), flush=True)
    for name, full_frame in (("talksplat_render_crop", False), ("talksplat_render_full_frame", True)):
        if name not in speed:
            speed[name] = _render_video_speed(subject, run, audios[0], full_frame)
            save_result(RESULTS, key, result)
        print(json.dumps({name: speed[name]}), flush=True)
    if "blink_response" not in result:
        result["blink_response"] = _blink_response(subject, run)
        save_result(RESULTS, key, result)
    print(json.dumps({"blink_response": result["blink_response"]["ear_median"]}), flush=True)
    if "held_out" not in result:
        result["held_out"] = _eval_figures(evaluate_subject(subject, run, None, subject / "eval" / f"{key}-held-out",
                                                            EvalConfig(progress=False)))
        save_result(RESULTS, key, result)
    print(json.dumps({"held_out": result["held_out"]}), flush=True)
    driven = result.setdefault("driven", {})
    renderer = Renderer.open(subject, run=run)
    for audio in audios:
        if audio.name not in driven:
            m = evaluate_subject(subject, run, audio, subject / "eval" / f"{key}-driven-{audio.stem}",
                                 EvalConfig(progress=False))
            driven[audio.name] = _eval_figures(m)
            driven[audio.name]["generator_coefficient_blinks"] = _generator_blink_rate(renderer, load_driving_audio(audio))
            save_result(RESULTS, key, result)
        print(json.dumps({audio.name: driven[audio.name]}), flush=True)
    print(f"wrote {RESULTS} [{key}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("subject", type=Path)
    parser.add_argument("--run", action="append", required=True, metavar="NAME=DIR")
    parser.add_argument("--audio", type=Path, nargs="+", required=True)
    parser.add_argument("--name", default=None)
    parser.add_argument("--blink-audio", type=Path, nargs="*", default=[],
                        help="longer speech rendered by the full run only (full settings), for the blink rate")
    parser.add_argument("--skip-self", action="store_true", help="skip the held-out eval")
    parser.add_argument("--acceptance", action="store_true",
                        help="score the first --run alone for the acceptance items (see the docstring)")
    parser.add_argument("--speed-ab", action="store_true",
                        help="only the crop render speed of every --run, measured in turns (first --audio)")
    parser.add_argument("--train-note", default="", help="with --acceptance: how training went (wall time, load)")
    parser.add_argument("--generator-blinks-only", action="store_true",
                        help="only recompute the generator's coefficient blink rates of an existing result")
    args = parser.parse_args()
    runs = dict(item.split("=", 1) for item in args.run)
    key = args.name or args.subject.name
    if args.speed_ab:
        speed_round_robin(args.subject, runs, args.audio[0], key)
        return
    if args.acceptance:
        acceptance(args.subject, Path(next(iter(runs.values()))), args.audio, key, args.train_note)
        return
    if args.generator_blinks_only:
        _update_generator_blinks(args.subject, Path(next(iter(runs.values()))), args.audio + args.blink_audio, key)
        return
    result: dict = {"machine": machine_info(), "subject": str(args.subject), "runs": {}, "driven": {},
                    "note": "machine shared with other engineers' jobs (load average 10-16 on 2 cores)"}
    result["real_video_blinks"] = _real_blinks(args.subject)
    save_result(RESULTS, key, result)
    for name, run in runs.items():
        summary = json.loads((Path(run) / "summary.json").read_text())
        entry = {"train_seconds": summary["train_seconds"], "iterations": summary["iterations"],
                 "gaussians": summary["gaussians"], "ms_per_iteration_median": summary["ms_per_iteration_median"],
                 "held_out_by_stage": summary["held_out_by_stage"], "config": json.loads((Path(run) / "config.json").read_text())}
        if not args.skip_self:
            entry["self"] = _self_eval(args.subject, name, Path(run))
        result["runs"][name] = entry
        print(json.dumps({name: entry.get("self")}), flush=True)
        save_result(RESULTS, key, result)
    full = next(iter(runs))
    for audio in args.audio:
        samples = load_driving_audio(audio)
        per_audio = result["driven"].setdefault(audio.name, {})
        for name, run in runs.items():
            renderer = Renderer.open(args.subject, run=Path(run))
            variants = {"full": ("generated", True)}
            if name == full:
                variants.update({"without_generator": ("video", True), "without_restorer": ("generated", False)})
                per_audio["generator_coefficient_blinks"] = _generator_blink_rate(renderer, samples)
                per_audio["crop_render_fps_256"] = _crop_render_fps(renderer, samples)
            for variant, (expression, restorer) in variants.items():
                scores = _driven(renderer, samples, expression, restorer)
                per_audio[f"{name}/{variant}"] = scores
                print(json.dumps({audio.name: {f"{name}/{variant}": scores}}), flush=True)
                save_result(RESULTS, key, result)
    for audio in args.blink_audio:
        samples = load_driving_audio(audio)
        renderer = Renderer.open(args.subject, run=Path(runs[full]))
        per_audio = result["driven"].setdefault(audio.name, {})
        per_audio["generator_coefficient_blinks"] = _generator_blink_rate(renderer, samples)
        per_audio[f"{full}/full"] = _driven(renderer, samples, "generated", True)
        print(json.dumps({audio.name: per_audio}), flush=True)
        save_result(RESULTS, key, result)
    print(json.dumps(result, indent=1))
    save_result(RESULTS, key, result)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
