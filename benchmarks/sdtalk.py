"""SDTalk figures of issue 17: pretraining throughput with 1 vs 2 processes, and one-shot inference FPS.

    .venv/bin/python benchmarks/sdtalk.py throughput SUBJECT_DIR... [--size 256] [--steps 6] [--name NAME]
    .venv/bin/python benchmarks/sdtalk.py fps MODEL_DIR SUBJECT_DIR [--frames 50] [--name NAME]
    .venv/bin/python benchmarks/sdtalk.py loo MODEL_DIR HELD_OUT_SUBJECT [--name NAME] [--tg-iters A B C --work DIR] [--seen]

``throughput`` runs ``talksplat pretrain`` twice from scratch with the same global batch (2 samples
per step): 1 process x batch 2 with all cores' threads, then ``--nproc 2`` x batch 1 with
cores/2 threads each (DDP, gloo). Samples/s per stage come from log.jsonl (each step's wall time,
the first ``WARMUP`` steps of each stage left out). The default model settings are used.

``fps`` lifts frame 0 of a prepared subject (the one-shot source: what ``talksplat oneshot`` reads
after preparing an image) once and times the per-frame work (audio code, both motion fields,
rasterization, neural renderer) over ``--frames`` frames of the subject's own audio; lifting is
timed separately. Encoding to MP4 is not included.

``loo`` is the reduced leave-one-identity-out check: MODEL_DIR was pretrained WITHOUT the held-out
subject; its first frame is the one-shot source, and its held-out frames (the last 10%) are
re-enacted from its own audio and its own cameras (self-reenactment). Against the real frames: PSNR,
SSIM (eval.metrics), lip LMD in pixels at the model's size and the Pearson r of the inner-lip
opening (FaceMesh on render and real frame, normalised by the inter-ocular distance). Baselines:
the source image held still (frame 0 repeated) and the model's reconstruction without motion
(stage 1 only); with ``--tg-iters A B C`` also the paper's second baseline, a TalkingGaussian avatar
trained on the single frame: a copy of the held-out subject (under ``--work``) in which every frame
shows frame 0 (image, labels, landmarks, expressions; the training frames also its camera) while each
frame keeps its own audio, trained with ``talksplat train --iters A B C`` at the model's size; it
re-enacts the held-out frames with their cameras and audio, as SDTalk does (``Avatar.render_own``;
its backdrop is frame 0 too, so it sees nothing of the target frames but their pose and sound).

The result also says what the evaluated checkpoint saw (identities, steps, seconds, samples per
identity; from summary.json, or from the checkpoint's meta.json for a run stopped early). ``--seen``
scores a subject that was pretrained on (only its held-out frames are new): a within-identity check,
recorded as such, never a leave-one-out figure.

Results are appended to benchmarks/results/sdtalk.json under NAME. The machine may be shared: its
load average is recorded with each figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import talksplat  # noqa: F401  - before torch, so talksplat's OpenMP settings apply as for users

# isort: split
import numpy as np
import torch
from _machine import machine_info

RESULTS = Path(__file__).parent / "results" / "sdtalk.json"
WARMUP = 2
GLOBAL_BATCH = 2


def pretrain(subjects: list[str], out: Path, nproc: int, size: int, steps: int, threads: int) -> dict:
    """One ``talksplat pretrain`` run from scratch; per-stage samples/s from its log."""
    cmd = [sys.executable, "-m", "talksplat.cli.main", "pretrain", *subjects, "-o", str(out), "--nproc", str(nproc),
           "--batch", str(GLOBAL_BATCH // nproc), "--size", str(size), "--iters", str(steps), str(steps),
           "--threads", str(threads), "--quiet", "--restart"]
    load_before = os.getloadavg()
    started = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - started
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    per_stage = {}
    for stage in ("reconstruction", "motion"):
        seconds = [r["seconds"] for r in records if r["stage"] == stage][WARMUP:]
        per_stage[stage] = {"timed_steps": len(seconds), "seconds_per_step": round(float(np.mean(seconds)), 4),
                            "samples_per_second": round(GLOBAL_BATCH / float(np.mean(seconds)), 3)}
    return {"processes": nproc, "threads_per_process": threads, "batch_per_process": GLOBAL_BATCH // nproc,
            "global_batch": GLOBAL_BATCH, "size": size, "steps_per_stage": steps, "per_stage": per_stage,
            "wall_seconds_incl_startup": round(wall, 1), "load_average_before": load_before,
            "load_average_after": os.getloadavg()}


def throughput(args: argparse.Namespace) -> dict:
    cores = os.cpu_count() or 2
    with tempfile.TemporaryDirectory(prefix="sdtalk-bench-") as tmp:
        runs = [pretrain(args.subjects, Path(tmp) / f"p{n}", n, args.size, args.steps, max(1, cores // n))
                for n in (1, 2)]
    speedup = {stage: round(runs[1]["per_stage"][stage]["samples_per_second"]
                            / runs[0]["per_stage"][stage]["samples_per_second"], 3) for stage in runs[0]["per_stage"]}
    for run in runs:
        print(f"{run['processes']} process(es) x {run['threads_per_process']} threads: " + ", ".join(
            f"{k} {v['samples_per_second']} samples/s" for k, v in run["per_stage"].items()))
    print(f"speed-up of 2 processes: {speedup}")
    return {"runs": runs, "speedup_2_vs_1": speedup, "subjects": args.subjects}


@torch.no_grad()
def fps(args: argparse.Namespace) -> dict:
    from talksplat.data.subject import load_subject_data
    from talksplat.recipes import sdtalk_oneshot as one

    loaded = one.load_model(Path(args.model))
    cfg, model = loaded.config, loaded.model
    source = one.source_from_subject(Path(args.subject), 0, cfg)
    audio = load_subject_data(Path(args.subject), cfg.size, cfg.audio_feature).audio
    n = min(args.frames, len(audio))
    started = time.perf_counter()
    lifted = model.lift(source)
    codes = model.audio_codes(audio)          # the whole clip's audio encoded once, as `oneshot` does
    lift_seconds = time.perf_counter() - started
    frame_seconds = []
    for t in range(n):
        tick = time.perf_counter()
        model.render(model.drive(lifted, model.audio_code(audio, t, codes)), source.w2c, source.K)
        frame_seconds.append(time.perf_counter() - tick)
    timed = frame_seconds[WARMUP:]
    gaussians = sum(len(g["means"]) for g in (lifted.visible, lifted.completion))
    result = {"size": cfg.size, "frames": len(timed), "threads": torch.get_num_threads(),
              "fps": round(len(timed) / sum(timed), 2), "ms_per_frame_median": round(1000 * float(np.median(timed)), 1),
              "lift_ms": round(1000 * lift_seconds, 1), "gaussians": gaussians, "checkpoint_step": loaded.step,
              "load_average": os.getloadavg()}
    print(f"oneshot inference at {cfg.size}^2: {result['fps']} frames/s ({result['ms_per_frame_median']} ms median, "
          f"{gaussians} Gaussians, {result['threads']} threads); lifting the image {result['lift_ms']} ms")
    return result


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """(T,) inner-lip gap / inter-ocular distance (NaN where FaceMesh found no face)."""
    gap = np.linalg.norm(landmarks[:, 13, :2] - landmarks[:, 14, :2], axis=-1)
    iod = np.linalg.norm(landmarks[:, 33, :2] - landmarks[:, 263, :2], axis=-1)
    return gap / np.maximum(iod, 1e-6)


def score(frames: list[np.ndarray], real: list[np.ndarray], real_landmarks: np.ndarray, size: int) -> dict:
    from talksplat.core.landmarks import LIP_POINTS
    from talksplat.eval.metrics import lmd, pearson, psnr, ssim
    from talksplat.eval.signals import track_landmarks

    marks = track_landmarks(frames, size)
    ok = np.isfinite(marks.reshape(len(marks), -1)).all(1)
    opening, real_opening = mouth_opening(marks), mouth_opening(real_landmarks)
    both = ok & np.isfinite(real_opening)
    r = pearson(opening[both], real_opening[both]) if both.sum() > 2 and np.std(opening[both]) > 0 else float("nan")
    return {"psnr": round(float(np.mean([psnr(f, g) for f, g in zip(frames, real)])), 3),
            "ssim": round(float(np.mean([ssim(f, g) for f, g in zip(frames, real)])), 4),
            "lip_lmd_px": round(lmd(marks, real_landmarks, LIP_POINTS), 3),
            "mouth_opening_r": round(float(r), 3), "face_found_fraction": round(float(ok.mean()), 3)}


@torch.no_grad()
def loo(args: argparse.Namespace) -> dict:
    from talksplat.data.subject import load_subject_data
    from talksplat.eval.signals import track_landmarks
    from talksplat.recipes import sdtalk_oneshot as one

    loaded = one.load_model(Path(args.model))
    cfg, model = loaded.config, loaded.model
    held_out = Path(args.subject)
    pretraining = pretraining_facts(Path(args.model), loaded.checkpoint, cfg)
    trained_on = [s["name"] for s in pretraining["identities"]]
    seen = held_out.name in trained_on or str(held_out.resolve()) in {s.get("path") for s in pretraining["identities"]}
    if seen and not args.seen:
        raise SystemExit(f"{held_out.name} was in the pretraining set: not a leave-one-out check (--seen scores "
                         "it anyway, as a within-identity check)")
    data = load_subject_data(held_out, cfg.size, cfg.audio_feature)
    if args.source_frame not in {int(t) for t in data.train_frames}:
        raise SystemExit(f"--source-frame {args.source_frame} is not one of {held_out.name}'s training frames "
                         f"(0..{int(data.train_frames[-1])}); the held-out frames are the targets")
    if args.tg_iters and args.source_frame != 0:
        raise SystemExit("the TalkingGaussian baseline is built from frame 0 only; drop --tg-iters or --source-frame")
    source = one.source_from_subject(held_out, args.source_frame, cfg)
    frames = [int(t) for t in data.val_frames]
    real = [(data.image(t).numpy() * 255).round().astype(np.uint8) for t in frames]
    real_landmarks = track_landmarks(real, cfg.size)
    cameras = data.w2c[frames]
    lifted = model.lift(source)
    codes = model.audio_codes(data.audio)
    driven, still_recon = [], []
    for t, w2c in zip(frames, cameras):
        driven.append(model.render(model.drive(lifted, model.audio_code(data.audio, t, codes)), w2c, source.K)["image"])
        still_recon.append(model.render(lifted, w2c, source.K)["image"])
    as_uint8 = lambda images: [(im.clamp(0, 1) * 255).round().byte().numpy() for im in images]
    held = [(data.image(args.source_frame).numpy() * 255).round().astype(np.uint8)] * len(frames)   # source, still
    result = {"held_out": held_out.name, "pretrained_on": trained_on, "checkpoint_step": loaded.step,
              "pretraining": {k: v for k, v in pretraining.items() if k != "identities"},
              "identity_seen_in_pretraining": seen,
              "size": cfg.size, "frames": len(frames), "source_frame": args.source_frame,
              "sdtalk": score(as_uint8(driven), real, real_landmarks, cfg.size),
              "sdtalk_without_motion": score(as_uint8(still_recon), real, real_landmarks, cfg.size),
              "baseline_source_held_still": score(held, real, real_landmarks, cfg.size),
              "baseline_talkinggaussian_single_frame": "not measured (--tg-iters)"}
    if args.tg_iters:
        tg_frames, tg_run = talkinggaussian_single_frame(held_out, Path(args.work), cfg.size, args.tg_iters,
                                                      data.train_frames, frames)
        result["baseline_talkinggaussian_single_frame"] = {**score(tg_frames, real, real_landmarks, cfg.size),
                                                           "run": tg_run}
    print(json.dumps(result, indent=1))
    if args.save_frames:
        import cv2

        strip = np.concatenate([np.concatenate([r, d], axis=0) for r, d in
                                zip(real[::max(1, len(real) // 6)], as_uint8(driven)[::max(1, len(real) // 6)])], axis=1)
        cv2.imwrite(args.save_frames, strip[..., ::-1])
    return result


def pretraining_facts(model_dir: Path, checkpoint: Path, cfg) -> dict:
    """What the evaluated checkpoint saw: identities, steps, wall seconds and samples per identity,
    from summary.json when the run finished, else from the checkpoint's meta.json (a run stopped
    early, e.g. by a deadline, is evaluated at its newest checkpoint and says so)."""
    from talksplat.recipes.sdtalk import load_identities, samples_per_identity

    summary_path = model_dir / "summary.json"
    meta = json.loads((Path(checkpoint) / "meta.json").read_text())
    progress = meta["progress"]
    facts = {"steps_done": int(meta["step"]), "global_batch": progress["world_size"] * progress["batch_per_process"],
             "train_seconds": progress.get("seconds"), "identities": meta["subject"]["subjects"],
             "stages": dataclasses.asdict(cfg.iterations), "finished": summary_path.is_file()}
    counts = [None]
    if facts["finished"]:
        summary = json.loads(summary_path.read_text())
        facts.update(train_seconds=summary["train_seconds"], samples_per_second=summary["samples_per_second"])
        counts = [s.get("samples") for s in summary["identities"]]
    if None in counts:      # a run stopped early, or one pretrained before the counts were recorded
        identities = load_identities([Path(s["path"]) for s in facts["identities"]], cfg)
        counts = samples_per_identity(identities, cfg.seed, facts["steps_done"], facts["global_batch"])
    facts["samples_per_identity"] = {s["name"]: n for s, n in zip(facts["identities"], counts)}
    return facts


def single_frame_subject(held_out: Path, out: Path, train_frames: np.ndarray) -> Path:
    """A copy of the prepared ``held_out`` subject in which every frame shows frame 0: frames, labels,
    landmarks, expression coefficients and face-model fits all frame 0's, and the training frames'
    cameras too. The held-out frames keep their cameras (the poses to re-enact) and every frame its
    audio. Made once (a finished copy is reused)."""
    import shutil

    done = out / ".single_frame_done"
    if done.is_file():
        return out
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(held_out, out, ignore=shutil.ignore_patterns("runs", "eval", "report", "tracking"))
    for name in ("frames.npy", "masks.npy", "landmarks.npy"):
        array = np.load(out / name)
        array[:] = array[0]
        np.save(out / name, array)
    n = len(np.load(out / "frames.npy", mmap_mode="r"))
    for name in ("expressions.npz", "face_model.npz", "cameras.npz"):
        if not (out / name).is_file():
            continue
        with np.load(out / name, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        for value in arrays.values():
            if value.ndim and value.shape[0] == n:
                if name == "cameras.npz":
                    value[train_frames] = value[0]
                else:
                    value[:] = value[0]
        np.savez(out / name, **arrays)
    done.write_text("frame 0 everywhere\n")
    return out


def talkinggaussian_single_frame(held_out: Path, work: Path, size: int, iters: list[int],
                                 train_frames: np.ndarray, frames: list[int]) -> tuple[list[np.ndarray], dict]:
    """Trains TalkingGaussian on ``single_frame_subject(held_out)`` and renders ``frames`` (their own
    cameras and audio); returns the uint8 frames and the run's facts."""
    from talksplat.recipes import load_avatar

    subject = single_frame_subject(held_out, work / f"{held_out.name}_frame0", train_frames)
    cmd = [sys.executable, "-m", "talksplat.cli.main", "train", str(subject), "--recipe", "talkinggaussian",
           "--size", str(size), "--iters", *map(str, iters), "--restart", "--quiet"]
    started = time.perf_counter()
    subprocess.run(cmd, check=True)
    seconds = time.perf_counter() - started
    avatar = load_avatar(subject, "talkinggaussian")
    images = [(avatar.render_own(t)["image"].clamp(0, 1) * 255).round().byte().numpy() for t in frames]
    return images, {"iterations": iters, "train_seconds": round(seconds, 1), "gaussians": avatar.num_gaussians(),
                    "subject_copy": str(subject)}


def save(name: str, kind: str, result: dict) -> None:
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.setdefault(name, {})[kind] = {**result, "machine": machine_info()}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))
    print(f"saved {RESULTS} [{name}][{kind}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("subjects", nargs="+")
    t.add_argument("--size", type=int, default=256)
    t.add_argument("--steps", type=int, default=6, help="steps per stage (the first 2 of each are not timed)")
    t.add_argument("--name", default="synthetic")
    f = sub.add_parser("fps")
    f.add_argument("model")
    f.add_argument("subject")
    f.add_argument("--frames", type=int, default=50)
    f.add_argument("--name", default="synthetic")
    lo = sub.add_parser("loo")
    lo.add_argument("model")
    lo.add_argument("subject")
    lo.add_argument("--name", default="real_loo")
    lo.add_argument("--save-frames", help="PNG: real (top) over rendered (bottom) held-out frames; never commit "
                    "images of real people")
    lo.add_argument("--source-frame", type=int, default=0,
                    help="the training frame lifted as the one-shot source (default 0; the spread over sources)")
    lo.add_argument("--seen", action="store_true",
                    help="score a subject that WAS pretrained on (its held-out frames were not): a within-identity "
                    "check of what pretraining learned, not a leave-one-out figure")
    lo.add_argument("--tg-iters", type=int, nargs=3, metavar=("STATIC", "MOTION", "FINETUNE"),
                    help="also the TalkingGaussian-on-one-frame baseline, trained with these iterations")
    lo.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "sdtalk_loo"),
                    help="folder for the baseline's single-frame subject copy and its run")
    args = parser.parse_args()
    result = {"throughput": throughput, "fps": fps, "loo": loo}[args.kind](args)
    save(args.name, args.kind, result)


if __name__ == "__main__":
    main()
