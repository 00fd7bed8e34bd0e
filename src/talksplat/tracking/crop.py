"""A stable square crop around the head, fixed for the whole video, and coordinate mapping.

The crop is one box per video (not per frame): a per-frame crop would move the background and
turn head motion into camera motion. The box covers the face, hair, neck and shoulders over the
whole clip and stays inside the frame, so pasting results back is a plain resize + copy.

Pixel convention: pixel centres at integer coordinates, so a source pixel coordinate u maps to
crop pixel ``(u + 0.5 - x0) * scale - 0.5`` with ``scale = size / side``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from talksplat.core.pixels import rescale_intrinsics

# The crop side is this many face sizes (bounding box of the face mesh: brow to chin, cheek to
# cheek) plus the range the face centre moves over the clip: hair above, neck and shoulders below.
CROP_FACE_SCALE = 2.4
# The crop centre sits this many face sizes below the face centre, to include neck and shoulders.
CROP_DOWN_SHIFT = 0.15


@dataclass(frozen=True)
class CropBox:
    """A square window of the source frame: top-left (x0, y0), side in source pixels, output size."""

    x0: int
    y0: int
    side: int
    size: int

    @property
    def scale(self) -> float:
        """Output pixels per source pixel."""
        return self.size / self.side

    def to_json(self) -> dict[str, int]:
        return asdict(self)


def compute_crop_box(landmarks: np.ndarray, width: int, height: int, size: int,
                     face_scale: float = CROP_FACE_SCALE) -> CropBox:
    """The fixed crop for a clip.

    Args:
        landmarks: (T, N, >=2) face landmarks in source pixels (gaps already filled).
        width, height: source frame size; size: output side in pixels.
    """
    lo = landmarks[:, :, :2].min(axis=1)
    hi = landmarks[:, :, :2].max(axis=1)
    centres = 0.5 * (lo + hi)
    face_size = float(np.median(np.max(hi - lo, axis=1)))
    motion = float(np.max(centres.max(axis=0) - centres.min(axis=0)))
    side = round(face_scale * face_size + motion)
    side = max(min(side, width, height), 16)
    cx, cy = np.median(centres, axis=0)
    cy += CROP_DOWN_SHIFT * face_size
    x0 = round(cx - side / 2.0)
    y0 = round(cy - side / 2.0)
    x0 = min(max(x0, 0), width - side)
    y0 = min(max(y0, 0), height - side)
    return CropBox(x0=x0, y0=y0, side=side, size=size)


def source_to_crop(uv: np.ndarray, box: CropBox) -> np.ndarray:
    """Map source pixel coordinates (..., 2) (extra trailing columns such as z are scaled) into the crop."""
    out = np.array(uv, dtype=np.float64, copy=True)
    out[..., 0] = (out[..., 0] + 0.5 - box.x0) * box.scale - 0.5
    out[..., 1] = (out[..., 1] + 0.5 - box.y0) * box.scale - 0.5
    if out.shape[-1] > 2:
        out[..., 2:] *= box.scale
    return out


def crop_to_source(uv: np.ndarray, box: CropBox) -> np.ndarray:
    """Inverse of :func:`source_to_crop` for (..., 2) pixel coordinates."""
    out = np.array(uv, dtype=np.float64, copy=True)
    out[..., 0] = (out[..., 0] + 0.5) / box.scale - 0.5 + box.x0
    out[..., 1] = (out[..., 1] + 0.5) / box.scale - 0.5 + box.y0
    return out


def crop_intrinsics(K: np.ndarray, box: CropBox) -> np.ndarray:
    """Source intrinsics (3, 3) -> intrinsics of the crop (3, 3)."""
    shifted = K.astype(np.float64).copy()
    shifted[0, 2] -= box.x0
    shifted[1, 2] -= box.y0
    return rescale_intrinsics(shifted, box.scale)


def crop_frame(frame: np.ndarray, box: CropBox) -> np.ndarray:
    """Cut the box out of a source frame (H, W, C) and resize it to (size, size, C)."""
    window = frame[box.y0:box.y0 + box.side, box.x0:box.x0 + box.side]
    if box.side == box.size:
        return np.ascontiguousarray(window)
    interp = cv2.INTER_AREA if box.side > box.size else cv2.INTER_CUBIC
    return cv2.resize(window, (box.size, box.size), interpolation=interp)


def paste_back(frame: np.ndarray, crop: np.ndarray, box: CropBox) -> np.ndarray:
    """Put a (size, size, C) crop back into a copy of the source frame (H, W, C)."""
    out = frame.copy()
    patch = crop if box.side == box.size else cv2.resize(crop, (box.side, box.side),
                                                         interpolation=cv2.INTER_CUBIC)
    out[box.y0:box.y0 + box.side, box.x0:box.x0 + box.side] = patch
    return out
