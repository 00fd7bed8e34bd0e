"""One-shot inference with a pretrained SDTalk model: one image + speech -> talking frames.

The image is tracked and fitted like one prepared frame: it is written as a 5-second still video
and run through ``talksplat prepare`` (FaceMesh, cameras, the head-model fit; resumable, cached in a
work folder), and frame 0 of that subject is the source. Its Gaussians are lifted once; each output
frame only runs the audio encoder, the two motion fields, the rasterizer and the neural renderer.

Head pose: ``still`` keeps the image's camera; a driving video (prepared the same way) or a prepared
subject moves the camera by the driver's head motion relative to its first frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from talksplat.core.constants import FPS
from talksplat.engine.checkpoint import load_latest_valid
from talksplat.errors import TalksplatError, UsageError
from talksplat.recipes.sdtalk import (
    NAME,
    FittedMesh,
    SDTalkConfig,
    SDTalkModel,
    SourceFrame,
    read_face_model,
    vertex_sets,
)

# A still needs few frames: every frame is the same picture (prepare's 5-s minimum is for training
# clips, so it is lowered for this one).
STILL_SECONDS = 1.2
MIN_PREPARE_SIZE = 128           # FaceMesh needs some pixels even when the model is tiny
CHECKPOINTS = "checkpoints"


@dataclass
class LoadedModel:
    model: SDTalkModel
    config: SDTalkConfig
    step: int
    checkpoint: Path


def load_model(model_dir: Path) -> LoadedModel:
    """The newest valid checkpoint of a ``talksplat pretrain`` folder, weights only, in eval mode."""
    model_dir = Path(model_dir)
    found = load_latest_valid(model_dir / CHECKPOINTS, recipe=NAME, config_type=SDTalkConfig)
    if found is None:
        raise UsageError(f"{model_dir} holds no SDTalk checkpoint; run `talksplat pretrain SUBJECT_DIR... "
                         f"-o {model_dir}` first")
    path, tensors, cfg, meta = found
    model = SDTalkModel(cfg)
    modules = {k[len("modules/"):]: v for k, v in tensors.items() if k.startswith("modules/")}
    try:
        model.load_state_dict(modules, strict=True)
    except RuntimeError as exc:
        raise TalksplatError(f"checkpoint {path} does not fit this talksplat's SDTalk model "
                             f"({str(exc).splitlines()[0]}); pretrain again") from exc
    return LoadedModel(model.eval(), cfg, int(meta["step"]), path)


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB, cropped to even sides (H.264 needs them); one-line error if unreadable."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"image {path} does not exist")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise UsageError(f"{path} is not a readable image; give a PNG or JPEG of one face")
    h, w = bgr.shape[:2]
    if min(h, w) < 64:
        raise UsageError(f"{path} is {w}x{h}; the face needs at least 64x64 pixels")
    return np.ascontiguousarray(bgr[: h - h % 2, : w - w % 2, ::-1])


def prepare_still(image: np.ndarray, work_dir: Path, size: int, quiet: bool = True) -> Path:
    """Prepares ``image`` as a still clip into ``work_dir/subject`` (resumable) and returns it."""
    from talksplat.io.video import VideoWriter
    from talksplat.prepare import PrepareConfig, prepare

    work_dir.mkdir(parents=True, exist_ok=True)
    video, subject = work_dir / "still.mp4", work_dir / "subject"
    if not video.is_file():
        with VideoWriter(video, image.shape[1], image.shape[0], fps=FPS, crf=12) as writer:
            for _ in range(int(STILL_SECONDS * FPS)):
                writer.write(image)
    prepare(video, subject, PrepareConfig(size=max(size, MIN_PREPARE_SIZE), audio=False, min_seconds=1.0), quiet=quiet)
    return subject


def source_from_subject(subject_dir: Path, frame: int, cfg: SDTalkConfig) -> SourceFrame:
    """Frame ``frame`` of a prepared subject as the model's source (image, camera, fitted mesh)."""
    from talksplat.data.subject import load_subject_data

    data = load_subject_data(subject_dir, cfg.size, cfg.audio_feature)
    face_model = read_face_model(subject_dir)
    completion, face = vertex_sets(cfg)
    return SourceFrame(image=data.image(frame), w2c=data.w2c[frame], K=data.K,
                       completion=FittedMesh(face_model, completion).world(frame),
                       face=FittedMesh(face_model, face).world(frame))


def driven_cameras(source_w2c: Tensor, driver_w2c: Tensor | None, n_frames: int) -> Tensor:
    """(n_frames, 4, 4) cameras: the source's (``driver_w2c`` None) or moved by the driver's head motion
    relative to its first frame (the driver loops when shorter)."""
    if driver_w2c is None:
        return source_w2c.expand(n_frames, 4, 4).clone()
    relative = driver_w2c @ torch.linalg.inv(driver_w2c[0])
    index = torch.arange(n_frames) % len(driver_w2c)
    return relative[index] @ source_w2c


@torch.no_grad()
def render_frames(model: SDTalkModel, source: SourceFrame, audio: Tensor, cameras: Tensor) -> Iterator[np.ndarray]:
    """(S, S, 3) uint8 frames: the source's Gaussians lifted once, driven by ``audio`` windows (T, window, D)."""
    lifted = model.lift(source)
    codes = model.audio_codes(audio)
    for t in range(len(cameras)):
        code = model.audio_code(audio, t, codes)
        image = model.render(model.drive(lifted, code), cameras[t], source.K)["image"]
        yield (image.clamp(0, 1) * 255).round().byte().numpy()


@torch.no_grad()
def render_still_frames(model: SDTalkModel, source: SourceFrame, cameras: Tensor) -> Iterator[np.ndarray]:
    """The source image's Gaussians without motion (the stage-1 reconstruction) at ``cameras``."""
    lifted = model.lift(source)
    for w2c in cameras:
        yield (model.render(lifted, w2c, source.K)["image"].clamp(0, 1) * 255).round().byte().numpy()
