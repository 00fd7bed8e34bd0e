"""Driving a trained avatar with new audio: the ``Renderer`` object and ``render_video``.

Pipeline per output frame: audio features -> audio code (with temporal attention) -> deformation
of both branches -> rasterize -> fuse -> composite over the backdrop (plate + torso/neck of the
matching source frame) -> paste back into the source frame at full resolution with a feathered
mask -> H.264 with the driving audio muxed (written atomically).

    renderer = Renderer.open(subject_dir)                 # loads the latest checkpoint once
    for frame in renderer.render_frames(samples):         # whole clip, frames yielded lazily
        ...
    stream = renderer.stream(RenderOptions())             # incremental audio, bounded latency
    frames = stream.push(chunk) ... stream.flush()
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from talksplat.core.constants import FPS, SAMPLE_RATE
from talksplat.engine.avatar import Avatar
from talksplat.engine.device import resolve_device
from talksplat.errors import TalksplatError, UsageError
from talksplat.recipes import load_avatar
from talksplat.render.seam import FEATHER_SIGMA_FRACTION, Box, SeamMeter, feather_mask, paste
from talksplat.render.stream import FrameJob, RenderStream, output_frame_count, streaming_feature

__all__ = ["FEATHER_SIGMA_FRACTION", "MAX_AUDIO_SECONDS", "RenderOptions", "RenderStream", "Renderer",
           "default_workers", "open_avatar", "output_frame_count", "pingpong", "render_video"]

PoseSource = Literal["loop", "still", "range"]
ExpressionSource = Literal["video", "neutral"]
MAX_AUDIO_SECONDS = 600.0   # longer audio is refused before it is decoded: split it into parts
# Beyond a few frames in flight the GIL-held parts (conditions, paste-back, encoding calls) limit the
# gain, and every frame in flight holds its images in memory.
MAX_DEFAULT_WORKERS = 4


@dataclass
class RenderOptions:
    """What drives everything but the mouth.

    pose: ``loop`` ping-pongs over the training frames' poses (no jump cuts), ``still`` holds one
    pose (the first training frame, or ``pose_range``'s start), ``range`` ping-pongs over the frames
    ``pose_range = (start, stop)`` (stop exclusive; any frames of the prepared video).
    expression: ``video`` takes the blink/brow/... coefficients of the same source frame as the pose,
    ``neutral`` the training frames' median.
    full_frame: paste back into the original full-resolution frames instead of returning the crop.
    """

    pose: PoseSource = "loop"
    expression: ExpressionSource = "video"
    full_frame: bool = False
    pose_range: tuple[int, int] | None = None


def pingpong(i: int, frames: np.ndarray) -> int:
    """Index of output frame i when looping ``frames`` forwards then backwards (no jump cuts)."""
    n = len(frames)
    if n == 1:
        return int(frames[0])
    period = 2 * (n - 1)
    k = i % period
    return int(frames[k if k < n else period - k])


class StageTimer:
    """Wall-clock seconds per named stage (for benchmarks/render.py)."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = defaultdict(list)

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name].append(time.perf_counter() - start)


class Renderer:
    """Renders an :class:`~talksplat.engine.avatar.Avatar` for any audio (whole clips or streamed).

    ``Renderer.open(path)`` loads the newest checkpoint of a subject's run (or of a run folder) once;
    ``Renderer(avatar)`` wraps an avatar that is already loaded (several renderers, e.g. one per
    streaming session, can share one avatar's weights)."""

    def __init__(self, avatar: Avatar) -> None:
        self.avatar = avatar
        self.conditioner = avatar.conditioner
        self.data = avatar.subject
        self.subject_dir = avatar.subject_dir
        self.size = avatar.size
        self.checkpoint_step = avatar.checkpoint_step
        self.crop = json.loads((self.subject_dir / "crop.json").read_text())
        self.box = Box.from_crop(self.crop)
        self.timer: StageTimer | None = None
        self._source_frames = None

    @classmethod
    def open(cls, path: Path, recipe: str | None = None, run: Path | None = None, device: str = "cpu") -> Renderer:
        """Loads the avatar of ``path`` (a prepared subject, or a run folder; see ``recipes.load_avatar``)
        onto ``device`` (see :func:`open_avatar`)."""
        return cls(open_avatar(path, recipe, run, device))

    # ---------------------------------------------------------------------------------- options
    def check_options(self, options: RenderOptions | None) -> RenderOptions:
        """Validates ``options`` against this subject (one-line TalksplatError) and returns them."""
        options = options or RenderOptions()
        if options.pose not in ("loop", "still", "range"):
            raise UsageError(f"pose must be loop, still or range (got {options.pose!r})")
        modes = self.conditioner.expression_modes
        if options.expression not in modes:
            raise UsageError(f"expression must be one of {', '.join(modes)} for this avatar (got {options.expression!r})")
        if options.pose == "range" and options.pose_range is None:
            raise UsageError("pose 'range' needs a frame range: --pose-range START:END")
        if options.pose_range is not None:
            start, stop = (int(v) for v in options.pose_range)
            n = self.data.n_frames
            if not 0 <= start < stop <= n:
                raise UsageError(f"pose range {start}:{stop} is not within the subject's frames 0:{n} "
                                 "(START < END, END exclusive)")
        return options

    def pose_frames(self, options: RenderOptions) -> np.ndarray:
        """The source frames whose poses (and expressions, backdrops) the output cycles through."""
        if options.pose_range is not None:
            frames = np.arange(int(options.pose_range[0]), int(options.pose_range[1]))
        else:
            frames = np.asarray(self.data.train_frames)
        return frames[:1] if options.pose == "still" else frames

    def source_index(self, i: int, options: RenderOptions) -> int:
        """The source frame that output frame ``i`` takes its pose, expression and backdrop from."""
        return pingpong(i, self.pose_frames(options))

    def output_size(self, options: RenderOptions) -> tuple[int, int]:
        """(width, height) of the frames ``options`` produce."""
        if options.full_frame:
            frames = self.source_frames
            return frames.width, frames.height
        return self.size, self.size

    # ---------------------------------------------------------------------------------- audio
    def audio_windows(self, samples: np.ndarray, n_frames: int | None = None) -> torch.Tensor:
        """The avatar's audio feature of a whole clip, (n_frames, *frame_shape)."""
        from talksplat.features.registry import AudioFeatures

        n_frames = output_frame_count(len(samples)) if n_frames is None else n_frames
        feats = AudioFeatures(self.conditioner.audio_feature).compute_samples(samples, n_frames)
        feats = feats[:, None, :] if feats.ndim == 2 else feats
        return torch.from_numpy(np.ascontiguousarray(feats)).float()

    def audio_window_extent(self) -> tuple[int, int]:
        """(frames before, frames after) whose audio windows the conditions of one frame depend on."""
        return self.conditioner.look_behind, self.conditioner.look_ahead

    # ---------------------------------------------------------------------------------- frames
    def stream(self, options: RenderOptions | None = None, seam_meter: SeamMeter | None = None) -> RenderStream:
        """A :class:`RenderStream` for incremental audio (TalksplatError if the feature cannot stream)."""
        options = self.check_options(options)
        feature = streaming_feature(self.conditioner.audio_feature)
        expected = tuple(self.data.audio.shape[1:])
        if tuple(feature.frame_shape) != expected:
            raise TalksplatError(f"the streaming {feature.name} feature has shape {feature.frame_shape} but the "
                                 f"model was trained on {expected}; retrain or render whole clips")
        return RenderStream(self, options, feature, seam_meter)

    def render_frames(self, samples: np.ndarray, options: RenderOptions | None = None,
                      seam_meter: SeamMeter | None = None, workers: int = 1) -> Iterator[np.ndarray]:
        """Yields ``output_frame_count(len(samples))`` uint8 RGB frames for ``samples`` (16 kHz mono float32), one at a
        time. Streamable features go through :meth:`stream` (so the results are identical to
        streaming); others are computed from the whole clip first.

        ``workers`` > 1 renders that many frames at once, each in one thread (see
        :meth:`_render_in_parallel`); the frames are the same and come in order."""
        from talksplat.features.audio import validate_samples

        samples = validate_samples(samples)
        options = self.check_options(options)
        if workers < 1:
            raise UsageError(f"workers must be at least 1 (got {workers})")
        try:
            stream = self.stream(options, seam_meter)
        except TalksplatError:
            stream = None
        if stream is not None:
            jobs = itertools.chain(stream.iter_push_jobs(samples), stream.iter_flush_jobs())
        else:
            n_frames = output_frame_count(len(samples))
            with self.stage("audio_features"):
                windows = self.audio_windows(samples, n_frames)
            jobs = (FrameJob(i, windows, i) for i in range(n_frames))
        if workers == 1:
            for job in jobs:
                yield self.render_frame(job.index, job.windows, job.window_index, options, seam_meter)
        else:
            yield from self._render_in_parallel(jobs, options, seam_meter, workers)

    def _render_in_parallel(self, jobs: Iterator[FrameJob], options: RenderOptions, seam_meter: SeamMeter | None,
                            workers: int) -> Iterator[np.ndarray]:
        """Frame parallelism: ``workers`` frames render at once, each with one intra-op thread.

        On two cores this is ~1.6x the frames per second of one frame at a time on two threads: the
        per-frame work is many small operations whose thread synchronisation, on a machine also running
        the H.264 encoder, costs more than it gains. The conditions (conditioners may keep state) and the
        paste-back (it decodes the source video in order) stay in this thread, in frame order; only the
        avatar's render runs in the workers. The thread count is process-wide in PyTorch: it is 1 while
        this generator runs and restored when it ends or is closed."""
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        pool = ThreadPoolExecutor(workers, thread_name_prefix="talksplat-render")
        pending: collections.deque = collections.deque()
        try:
            for job in jobs:
                src = self.source_index(job.index, options)
                conditions = self._frame_conditions(job, src, options)
                pending.append((src, pool.submit(self._render_crop, src, conditions)))
                if len(pending) > workers:          # keep every worker busy, memory bounded
                    yield self._finish_frame(*pending.popleft(), options, seam_meter)
            while pending:
                yield self._finish_frame(*pending.popleft(), options, seam_meter)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            torch.set_num_threads(previous_threads)

    def _finish_frame(self, src: int, crop: Future, options: RenderOptions, seam_meter: SeamMeter | None) -> np.ndarray:
        frame, alpha = crop.result()
        return self.paste_back(frame, alpha, src, seam_meter) if options.full_frame else frame

    @torch.no_grad()
    def render_frame(self, i: int, windows: torch.Tensor, window_index: int, options: RenderOptions,
                     seam_meter: SeamMeter | None = None) -> np.ndarray:
        """Output frame ``i``; ``windows[window_index]`` is its audio window, with its neighbours around."""
        src = self.source_index(i, options)
        conditions = self._frame_conditions(FrameJob(i, windows, window_index), src, options)
        frame, alpha = self._render_crop(src, conditions)
        if options.full_frame:
            frame = self.paste_back(frame, alpha, src, seam_meter)
        return frame

    @torch.no_grad()
    def _frame_conditions(self, job: FrameJob, src: int, options: RenderOptions):
        with self.stage("audio_encoder"):
            return self.conditioner.conditions(job.windows, job.window_index, src, options.expression)

    @torch.no_grad()
    def _render_crop(self, src: int, conditions) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 RGB crop, float alpha (H, W)) of the avatar posed like source frame ``src``."""
        with self.stage("render"):
            out = self.avatar.render(src, conditions)
            frame = out["image"].mul(255.0).clamp_(0.0, 255.0).round_().to(torch.uint8).cpu().numpy()
        return frame, out["alpha"][..., 0].cpu().numpy()

    def paste_back(self, crop_rgb: np.ndarray, alpha: np.ndarray, src: int,
                   seam_meter: SeamMeter | None = None) -> np.ndarray:
        """Blends the rendered crop into source frame ``src`` with a feathered head mask (seam.py)."""
        import cv2

        frames = self.source_frames
        with self.stage("source_decode"):
            full = frames[src]
        with self.stage("paste_back"):
            side = self.box.side
            patch = crop_rgb if crop_rgb.shape[0] == side else cv2.resize(crop_rgb, (side, side),
                                                                          interpolation=cv2.INTER_LINEAR)
            mask = feather_mask(alpha, self.box, (frames.width, frames.height))
            out = paste(full, patch, mask, self.box)
        if seam_meter is not None:
            with self.stage("seam"):
                seam_meter.add(out, full, mask, self.box)
        return out

    @property
    def source_frames(self):
        """The full-resolution source video with a bounded decode cache (frames.py)."""
        if self._source_frames is None:
            from talksplat.render.frames import SourceFrames

            self._source_frames = SourceFrames(self.subject_dir / "media" / "full.mp4")
        return self._source_frames

    def stage(self, name: str):
        return self.timer(name) if self.timer is not None else contextlib.nullcontext()

    def close(self) -> None:
        if self._source_frames is not None:
            self._source_frames.close()
            self._source_frames = None


# ------------------------------------------------------------------------------------------ files
def check_output_path(out_path: Path) -> Path:
    """One-line TalksplatError unless ``out_path`` is an .mp4 we can create (probes the folder)."""
    out_path = Path(out_path)
    if out_path.suffix.lower() != ".mp4":
        raise UsageError(f"output must be an .mp4 file, got {out_path}")
    if out_path.is_dir():
        raise UsageError(f"output {out_path} is a folder; give a file name ending in .mp4")
    folder = out_path.parent
    if not folder.exists():
        raise UsageError(f"output folder {folder} does not exist; create it first")
    if not folder.is_dir():
        raise UsageError(f"output folder {folder} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{out_path.stem}.", suffix=".probe", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise TalksplatError(f"cannot write to {folder} ({exc.strerror or exc}); choose another output folder") from exc
    return out_path


def audio_header_seconds(path: Path) -> float | None:
    """The audio stream's duration from the container header (no decoding); None if unknown."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            if container.duration is not None:
                return container.duration / av.time_base
    except (av.FFmpegError, OSError):
        return None   # load_audio reports unreadable files with the reason
    return None


def _too_long(path: Path, seconds: float, limit: float) -> TalksplatError:
    return UsageError(f"{path} is {seconds:.0f} s long; the limit is {limit:.0f} s: split it into "
                      "shorter files (or stream it with Renderer.stream)")


def load_driving_audio(audio_path: Path, max_seconds: float | None = None) -> np.ndarray:
    """Decodes ``audio_path`` to 16 kHz mono float32 after checking its length from the header;
    one-line TalksplatError if missing, unreadable, silent, too short or longer than ``max_seconds``
    (default :data:`MAX_AUDIO_SECONDS`)."""
    from talksplat.features.audio import load_audio_16k

    max_seconds = MAX_AUDIO_SECONDS if max_seconds is None else float(max_seconds)
    audio_path = Path(audio_path)
    if not audio_path.is_file():
        raise UsageError(f"audio file {audio_path} does not exist")
    declared = audio_header_seconds(audio_path)
    if declared is not None and declared > max_seconds:
        raise _too_long(audio_path, declared, max_seconds)
    samples = load_audio_16k(audio_path)
    seconds = len(samples) / SAMPLE_RATE
    if seconds > max_seconds:
        raise _too_long(audio_path, seconds, max_seconds)
    return samples


def open_avatar(path: Path, recipe: str | None = None, run: Path | None = None, device: str = "cpu") -> Avatar:
    """``recipes.load_avatar`` onto ``device`` (``auto``, ``cpu`` or ``cuda``: engine.device). Asking for
    a GPU where there is none is refused before the avatar loads."""
    if device != "cpu":
        resolve_device(device, ("cpu", "cuda"))
    avatar = load_avatar(Path(path), recipe, run)
    chosen = resolve_device(device, avatar.recipe.devices, f"recipe {avatar.recipe_name}")
    if chosen.type != "cpu":
        avatar.to_device(chosen)
    return avatar


def default_workers(device: torch.device | None = None) -> int:
    """Frames ``render_video`` renders at once: on the CPU one per thread PyTorch may use (its default
    is the cores this process may run on), at most ``MAX_DEFAULT_WORKERS``; on a GPU one (the GPU
    works in parallel within a frame)."""
    if device is not None and device.type != "cpu":
        return 1
    return max(1, min(torch.get_num_threads(), MAX_DEFAULT_WORKERS))


def render_video(renderer: Renderer, audio_path: Path, out_path: Path, options: RenderOptions | None = None,
                 *, max_seconds: float | None = None, progress: bool = True, preset: str = "medium",
                 samples: np.ndarray | None = None, workers: int | None = None) -> dict:
    """Renders ``audio_path`` to an H.264 MP4 (yuv420p, 25 fps, the audio muxed and fitted to the frames),
    written atomically: on any error or interruption nothing appears at ``out_path`` (an existing file
    there is left as it was). Returns a summary (with the seam statistic for full-frame output).
    ``samples``: the audio already decoded by :func:`load_driving_audio` (not decoded again).
    ``workers``: frames rendered at once (``Renderer.render_frames``; default :func:`default_workers`)."""
    import av
    from tqdm import tqdm

    from talksplat.features.audio import fit_to_frames
    from talksplat.io.video import VideoWriter

    audio_path, out_path = Path(audio_path), Path(out_path)
    check_output_path(out_path)
    options = renderer.check_options(options)
    samples = load_driving_audio(audio_path, max_seconds) if samples is None else samples
    n_frames = output_frame_count(len(samples))
    muxed = fit_to_frames(samples, n_frames)      # exactly the frames' length: A/V end together
    width, height = renderer.output_size(options)
    meter = SeamMeter() if options.full_frame else None
    start = time.perf_counter()
    try:
        with VideoWriter(out_path, width, height, fps=FPS, audio=muxed, sample_rate=SAMPLE_RATE,
                         preset=preset) as writer:
            workers = default_workers(renderer.avatar.device) if workers is None else workers
            frames = renderer.render_frames(samples, options, meter, workers=workers)
            for frame in tqdm(frames, total=n_frames, desc="rendering", unit="frame", disable=not progress):
                with renderer.stage("encode"):
                    writer.write(frame)
            if writer.num_frames != n_frames:   # an internal error: do not leave a wrong file
                raise TalksplatError(f"rendered {writer.num_frames} frames instead of {n_frames}; nothing written")
    except (OSError, av.FFmpegError) as exc:
        raise TalksplatError(f"writing {out_path} failed ({exc}); nothing was written") from exc
    elapsed = time.perf_counter() - start
    summary = {"frames": n_frames, "seconds": n_frames / FPS, "audio_seconds": len(samples) / SAMPLE_RATE,
               "size": [width, height],
               "output": str(out_path), "render_seconds": round(elapsed, 2),
               "fps": round(n_frames / elapsed, 2) if elapsed > 0 else None,
               "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(options).items()},
               "checkpoint_step": renderer.checkpoint_step, "workers": workers, "device": str(renderer.avatar.device)}
    if meter is not None:
        summary["seam"] = meter.result()
    return summary
