"""End-to-end rendering speed of a trained avatar: frames per second and where the time goes.

    .venv/bin/python benchmarks/render.py SUBJECT_DIR [--run RUN_DIR] [--seconds 4] [--repeats 3] [--large 50000]

For the avatar as trained and an enlarged copy (--large Gaussians in total: face Gaussians duplicated
with a jitter of half their scale, a speed proxy that renders a slightly denser-looking head), at
256^2 and 512^2 (the subject's data reloaded at that size, the model's camera scaled), drives the
real ``RenderStream`` with the subject's own audio in 40 ms chunks (as a server would), pastes every
frame back into a full frame of the same size (the source frame resized to it, as for footage whose
crop is the whole frame) and encodes H.264 (libx264, preset medium, as ``talksplat render``).

Per frame, median over the frames after a 10-frame warm-up (then the median over --repeats runs,
done round-robin over the cases), in ms: audio features, audio encoder,
motion fields (both branches), rasterizer (both branches), backdrop (the source frame's torso over the
plate, at the render size), fuse/composite (the rest of the model's render: activations, fusion,
compositing, to uint8), paste-back, H.264 encoding; and end-to-end frames per
second (wall clock over those frames) and the process's CPU time per frame (all threads; less
sensitive to other load than wall time). Source-frame decoding is timed separately (bounded cache,
forward and ping-pong). The machine is shared: compare rows within one run. Writes
benchmarks/results/render.json.

Each case is also rendered the way ``talksplat render`` does it (``Renderer.render_frames(workers=N)``,
N frames at once with one thread each, N = ``--workers`` or the default: one per core, at most 4): its
end-to-end FPS and CPU ms per frame decide the issue's target (512^2, ~50k Gaussians, audio in ->
H.264 out >= 25 FPS and <= 80 CPU ms per frame).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import talksplat  # noqa: F401  - before torch, so talksplat's OpenMP settings apply as for users

# isort: split
import numpy as np
import torch
from _machine import machine_info

RESULTS = Path(__file__).parent / "results" / "render.json"
RESOLUTIONS = (256, 512)
WARMUP_FRAMES = 10
CHUNK = 640                    # 40 ms of 16 kHz audio per push
TARGET = {"res": 512, "gaussians": 50_000, "fps": 25.0, "cpu_ms": 80.0}
STAGES = ("audio_features", "audio_encoder", "motion_field", "rasterize", "backdrop", "fuse_composite", "paste_back",
          "encode")


def enlarge(model, total: int, seed: int = 0) -> None:
    """Duplicates face Gaussians (jittered by half their scale) until the model has ``total``."""
    extra = total - model.num_gaussians()
    if extra <= 0:
        return
    gen = torch.Generator().manual_seed(seed)
    params = model.sets["face"].params
    n = params["means"].shape[0]
    idx = torch.randint(0, n, (extra,), generator=gen)
    with torch.no_grad():
        jitter = torch.randn(extra, 3, generator=gen) * torch.exp(params["log_scales"][idx]) * 0.5
        grown = {name: torch.cat([p.detach(), p.detach()[idx] + (jitter if name == "means" else 0)])
                 for name, p in params.items()}
    for name, value in grown.items():
        params[name] = torch.nn.Parameter(value)


def set_resolution(renderer, size: int) -> None:
    from talksplat.data.subject import load_subject_data

    recipe = renderer.avatar.recipe
    data = load_subject_data(renderer.subject_dir, size, recipe.cfg.audio_feature)
    renderer.data = recipe.data = data
    renderer.size = recipe.cfg.size = size


class SquareFrames:
    """The subject's source frames resized to size x size: a full frame whose crop is all of it."""

    def __init__(self, renderer, size: int, frames) -> None:
        import cv2

        source = renderer.source_frames
        self._frames = {int(i): cv2.resize(np.ascontiguousarray(source[int(i)]), (size, size),
                                           interpolation=cv2.INTER_AREA) for i in frames}
        self.width = self.height = size

    def __getitem__(self, index: int) -> np.ndarray:
        return self._frames[int(index)]


def instrument(renderer):
    """Times the motion fields and the rasterizer inside the model's render (no model changes)."""
    import talksplat.recipes.talkinggaussian as recipe_module

    timer = renderer.timer

    def timed(name: str, function):
        def wrapper(*args, **kwargs):
            with timer(name):
                return function(*args, **kwargs)
        return wrapper

    original_rasterize = recipe_module.rasterize
    recipe_module.rasterize = timed("rasterize", original_rasterize)
    for motion in renderer.avatar.recipe._motion_fields().values():
        motion.forward = timed("motion_field", motion.forward)
    renderer.data.backdrop = timed("backdrop", renderer.data.backdrop)
    return lambda: setattr(recipe_module, "rasterize", original_rasterize)


def per_frame_ms(seconds: list[float], frames: int, per_frame_calls: int) -> list[float]:
    """Sums ``per_frame_calls`` consecutive calls into per-frame milliseconds."""
    calls = seconds[: frames * per_frame_calls]
    return [1000 * sum(calls[i:i + per_frame_calls]) for i in range(0, len(calls), per_frame_calls)]


def open_case(subject: Path, run: Path | None, res: int, gaussians: int | None, samples: np.ndarray):
    """The renderer of one case: the avatar (enlarged to ``gaussians``) at ``res``^2, pasting back into
    square full frames of that size."""
    from talksplat.render.renderer import Renderer, RenderOptions
    from talksplat.render.seam import Box

    renderer = Renderer.open(subject, run=run)
    if gaussians:
        enlarge(renderer.avatar.recipe, gaussians)
    set_resolution(renderer, res)
    options = RenderOptions(full_frame=True)
    n_frames = len(samples) // 640
    renderer.check_options(options)
    used = {renderer.source_index(i, options) for i in range(n_frames + 1)}
    renderer._source_frames = SquareFrames(renderer, res, used)
    renderer.box = Box(0, 0, res)
    return renderer, options


def run_workers(subject: Path, run: Path | None, res: int, gaussians: int | None, samples: np.ndarray,
                workers: int) -> dict:
    """``talksplat render``'s path: the whole clip's frames from ``Renderer.render_frames(workers=...)``
    (``workers`` frames at once, one thread each) into H.264; end-to-end FPS and CPU ms per frame."""
    from talksplat.io.video import VideoWriter

    renderer, options = open_case(subject, run, res, gaussians, samples)
    stamps: list[float] = []
    cpu: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, \
            VideoWriter(Path(tmp) / "bench.mp4", res, res, fps=25, audio=samples) as writer:
        for frame in renderer.render_frames(samples, options, workers=workers):
            writer.write(frame)
            stamps.append(time.perf_counter())
            cpu.append(time.process_time())
    frames = len(stamps)
    fps = (frames - WARMUP_FRAMES) / (stamps[-1] - stamps[WARMUP_FRAMES - 1])
    cpu_ms = (cpu[-1] - cpu[WARMUP_FRAMES - 1]) / (frames - WARMUP_FRAMES) * 1000
    return {"res": res, "gaussians": renderer.avatar.num_gaussians(), "frames": frames, "workers": workers,
            "fps_end_to_end": fps, "ms_per_frame_end_to_end": 1000 / fps, "cpu_ms_per_frame": cpu_ms}


def run_case(subject: Path, run: Path | None, res: int, gaussians: int | None, samples: np.ndarray) -> dict:
    from talksplat.io.video import VideoWriter
    from talksplat.render.renderer import StageTimer

    renderer, options = open_case(subject, run, res, gaussians, samples)
    renderer.timer = StageTimer()
    restore = instrument(renderer)
    stream = renderer.stream(options)
    stamps: list[float] = []
    cpu: list[float] = []
    kept: list[np.ndarray] = []
    try:
        with tempfile.TemporaryDirectory() as tmp, \
                VideoWriter(Path(tmp) / "bench.mp4", res, res, fps=25, audio=samples) as writer:
            start = time.perf_counter()
            for pos in range(0, len(samples), CHUNK):
                for frame in stream.push(samples[pos:pos + CHUNK]):
                    with renderer.timer("encode"):
                        writer.write(frame)
                    stamps.append(time.perf_counter())
                    cpu.append(time.process_time())
                    kept.append(frame)
            for frame in stream.flush():
                with renderer.timer("encode"):
                    writer.write(frame)
                stamps.append(time.perf_counter())
                cpu.append(time.process_time())
            with renderer.timer("encode_close"):
                writer.close()
            total = time.perf_counter() - start
    finally:
        restore()
    frames = len(stamps)
    s = renderer.timer.seconds
    branches = len(renderer.avatar.recipe.sets)
    per_frame = {
        "audio_features": per_frame_ms(s["audio_features"], frames, 1),
        "audio_encoder": per_frame_ms(s["audio_encoder"], frames, 1),
        "motion_field": per_frame_ms(s["motion_field"], frames, branches),
        "rasterize": per_frame_ms(s["rasterize"], frames, branches),
        "render": per_frame_ms(s["render"], frames, 1),
        "backdrop": per_frame_ms(s["backdrop"], frames, 1),
        "paste_back": per_frame_ms(s["paste_back"], frames, 1),
        "encode": per_frame_ms(s["encode"], frames, 1),
    }
    per_frame["fuse_composite"] = [r - m - z - b for r, m, z, b in zip(
        per_frame["render"], per_frame["motion_field"], per_frame["rasterize"], per_frame["backdrop"], strict=True)]
    steady = {k: v[WARMUP_FRAMES:] for k, v in per_frame.items()}
    medians = {k: statistics.median(v) for k, v in steady.items() if v}
    wall = stamps[-1] - stamps[WARMUP_FRAMES - 1]
    fps = (frames - WARMUP_FRAMES) / wall
    cpu_ms = (cpu[-1] - cpu[WARMUP_FRAMES - 1]) / (frames - WARMUP_FRAMES) * 1000
    return {"res": res, "gaussians": renderer.avatar.num_gaussians(), "frames": frames,
            "fps_end_to_end": fps, "ms_per_frame_end_to_end": 1000 / fps, "cpu_ms_per_frame": cpu_ms,
            "total_seconds_incl_warmup": total, "encode_close_ms": 1000 * s["encode_close"][0],
            # the first push to the first frame out, pushing audio as fast as it renders (no network):
            # the stream's own share of a live session's first-frame latency
            "first_frame_ms": 1000 * (stamps[0] - start),
            "median_ms": medians, "sum_of_stage_medians_ms": sum(medians[k] for k in STAGES),
            "encode_alone_ms": encode_alone(kept, samples),
            "latency_samples": stream.latency_samples, "threads": torch.get_num_threads()}


def encode_alone(frames: list[np.ndarray], samples: np.ndarray) -> float:
    """Wall ms per frame to encode the frames by themselves (x264 works in its own threads, so the
    per-call time in the pipeline hides most of its cost in the other stages' wall time)."""
    from talksplat.io.video import VideoWriter

    height, width = frames[0].shape[:2]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        with VideoWriter(Path(tmp) / "alone.mp4", width, height, fps=25, audio=samples) as writer:
            for frame in frames:
                writer.write(frame)
        return (time.perf_counter() - start) / len(frames) * 1000


def combine(found: list[dict]) -> dict:
    """Median over repeated runs of one case (every number), keeping each run's end-to-end FPS."""
    out = dict(found[-1])
    for key in ("fps_end_to_end", "ms_per_frame_end_to_end", "cpu_ms_per_frame", "sum_of_stage_medians_ms",
                "encode_alone_ms", "first_frame_ms"):
        out[key] = statistics.median(r[key] for r in found)
    out["median_ms"] = {k: statistics.median(r["median_ms"][k] for r in found) for k in found[0]["median_ms"]}
    out["fps_each_run"] = [round(r["fps_end_to_end"], 2) for r in found]
    return out


def combine_totals(found: list[dict]) -> dict:
    """Median FPS and CPU ms over repeated runs of one case of ``run_workers``."""
    out = dict(found[-1])
    for key in ("fps_end_to_end", "ms_per_frame_end_to_end", "cpu_ms_per_frame"):
        out[key] = statistics.median(r[key] for r in found)
    out["fps_each_run"] = [round(r["fps_end_to_end"], 2) for r in found]
    out["cpu_ms_each_run"] = [round(r["cpu_ms_per_frame"], 1) for r in found]
    return out


def decode_speed(subject: Path, frames: int = 60) -> dict:
    """ms per full-resolution source frame: forward, and ping-pong with the default 256 MB cache."""
    from talksplat.render.frames import SourceFrames
    from talksplat.render.renderer import pingpong

    path = subject / "media" / "full.mp4"
    source = SourceFrames(path)
    n = min(len(source) or frames, frames)
    start = time.perf_counter()
    for i in range(n):
        source[i]
    forward = (time.perf_counter() - start) / n * 1000
    bounded = SourceFrames(path, max_bytes=8 * source.frame_bytes)   # 8 frames: forces backward seeks
    start = time.perf_counter()
    order = [pingpong(i, np.arange(n)) for i in range(2 * n)]
    for i in order:
        bounded[i]
    pingpong_ms = (time.perf_counter() - start) / len(order) * 1000
    return {"size": [source.width, source.height], "forward_ms_per_frame": forward,
            "pingpong_ms_per_frame_8_frame_cache": pingpong_ms, "default_cache_frames": source.capacity,
            "decoded_per_output_frame_8_frame_cache": bounded.decoded / len(order)}


def fmt(value, digits=1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(rows: list[dict]) -> None:
    header = ("avatar", "N", "res", "features", "encoder", "motion", "raster", "backdrop", "fuse/comp", "paste", "x264",
              "sum", "e2e ms", "FPS", "x264 alone", "CPU ms", "1st frame")
    print(" | ".join(f"{h:>9}" for h in header))
    for r in rows:
        m = r["median_ms"]
        cells = (r["avatar"], r["gaussians"], r["res"], *(fmt(m.get(k), 2) for k in STAGES),
                 fmt(r["sum_of_stage_medians_ms"]), fmt(r["ms_per_frame_end_to_end"]), fmt(r["fps_end_to_end"]),
                 fmt(r["encode_alone_ms"]), fmt(r["cpu_ms_per_frame"]), fmt(r.get("first_frame_ms"), 0))
        print(" | ".join(f"{c!s:>9}" for c in cells))
    print("per-frame medians in ms; e2e = wall clock per frame after warm-up (includes Python overhead and x264's "
          "own threads); x264 = the write() call in the pipeline, x264 alone = encoding the same frames by themselves; "
          "CPU ms = process CPU time per frame, all threads (on 2 idle cores the wall time is at least half of it); "
          "1st frame = ms from the first audio push to the first frame out")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("subject", type=Path)
    parser.add_argument("--run", type=Path)
    parser.add_argument("--seconds", type=float, default=4.0, help="driving audio per case")
    parser.add_argument("--repeats", type=int, default=3, help="runs per case (medians are reported)")
    parser.add_argument("--large", type=int, default=TARGET["gaussians"], help="Gaussians of the enlarged avatar")
    parser.add_argument("--workers", type=int, default=None,
                        help="frames at once on talksplat render's path (default: render.renderer.default_workers())")
    args = parser.parse_args()
    from talksplat.render.renderer import default_workers

    workers = args.workers or default_workers()

    from talksplat.features.audio import load_audio_16k

    samples = load_audio_16k(args.subject / "audio" / "audio.wav")[: int(args.seconds * 16_000)]
    cases = [(avatar, gaussians, res) for avatar, gaussians in (("trained", None), ("enlarged", args.large))
             for res in RESOLUTIONS]
    runs: dict[tuple, list[dict]] = {case: [] for case in cases}
    parallel: dict[tuple, list[dict]] = {case: [] for case in cases}
    for rep in range(args.repeats):       # round-robin, so a burst of load elsewhere hits every case alike
        for avatar, gaussians, res in cases:
            row = run_case(args.subject, args.run, res, gaussians, samples)
            runs[(avatar, gaussians, res)].append(row)
            fast = run_workers(args.subject, args.run, res, gaussians, samples, workers)
            parallel[(avatar, gaussians, res)].append(fast)
            print(f"run {rep + 1}/{args.repeats}: {avatar} N={row['gaussians']} {res}^2: "
                  f"{row['fps_end_to_end']:.1f} FPS one frame at a time (stream), "
                  f"{fast['fps_end_to_end']:.1f} FPS {workers} frames at once (talksplat render)", flush=True)
    rows = [{"avatar": case[0], **combine(found)} for case, found in runs.items()]
    render_rows = [{"avatar": case[0], **combine_totals(found)} for case, found in parallel.items()]
    print()
    print("one frame at a time on all threads (RenderStream, as `talksplat serve`), per stage:")
    print_table(rows)
    print()
    print(f"`talksplat render`'s path: {workers} frames at once, one thread each (Renderer.render_frames(workers=...)):")
    for r in render_rows:
        print(f"  {r['avatar']:>8} N={r['gaussians']:>6} {r['res']}^2: {r['fps_end_to_end']:5.1f} FPS "
              f"(runs {r['fps_each_run']}), {r['cpu_ms_per_frame']:5.1f} CPU ms/frame")
    decode = decode_speed(args.subject)
    print(f"source decode {decode['size'][0]}x{decode['size'][1]}: {decode['forward_ms_per_frame']:.2f} ms/frame "
          f"forward, {decode['pingpong_ms_per_frame_8_frame_cache']:.2f} ms/frame ping-pong with an 8-frame cache")
    staged = next(r for r in rows if r["avatar"] == "enlarged" and r["res"] == TARGET["res"])
    target = next(r for r in render_rows if r["avatar"] == "enlarged" and r["res"] == TARGET["res"])
    met = target["fps_end_to_end"] >= TARGET["fps"] and target["cpu_ms_per_frame"] <= TARGET["cpu_ms"]
    verdict = {"target": f"{TARGET['res']}^2, ~{TARGET['gaussians'] // 1000}k Gaussians, audio in -> H.264 out "
                         f">= {TARGET['fps']:.0f} FPS and <= {TARGET['cpu_ms']:.0f} CPU ms per frame on 2 cores "
                         "(`talksplat render`'s path)",
               "measured_fps": target["fps_end_to_end"], "measured_cpu_ms": target["cpu_ms_per_frame"],
               "workers": workers, "met": met, "budget_ms": 1000 / TARGET["fps"],
               "one_frame_at_a_time_fps": staged["fps_end_to_end"],
               "stage_share": {k: staged["median_ms"][k] / staged["sum_of_stage_medians_ms"] for k in STAGES}}
    print(f"  [{'met' if met else 'MISSED'}] {verdict['target']}: {target['fps_end_to_end']:.1f} FPS, "
          f"{target['cpu_ms_per_frame']:.0f} CPU ms/frame (one frame at a time: {staged['fps_end_to_end']:.1f} FPS)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": machine_info(), "subject": str(args.subject.resolve()),
                                   "seconds": args.seconds, "repeats": args.repeats, "rows": rows,
                                   "render_rows": render_rows, "source_decode": decode, "target": verdict}, indent=1))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
