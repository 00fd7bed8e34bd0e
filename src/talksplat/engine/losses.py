"""Image losses shared by every recipe."""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from talksplat.core.labels import INSIDE_MOUTH, LIPS
from talksplat.fields.motion import Deformation
from talksplat.gaussians.rasterize import project_points

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2


@functools.cache
def _gaussian_kernel(size: int, sigma: float) -> Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    k = torch.exp(-x.square() / (2 * sigma**2))
    return k / k.sum()


def _blur(x: Tensor, kernel: Tensor) -> Tensor:
    """Separable Gaussian blur of x[B, C, H, W] (two 1D passes: ~2x faster than an 11x11 window)."""
    c = x.shape[1]
    kx = kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    ky = kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    pad = kernel.shape[0] // 2
    x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="reflect"), kx, groups=c)
    return F.conv2d(F.pad(x, (0, 0, pad, pad), mode="reflect"), ky, groups=c)


def ssim(img: Tensor, ref: Tensor) -> Tensor:
    """Mean SSIM of img[H, W, C] vs ref[H, W, C] in [0, 1] (Gaussian window, sigma 1.5, as the papers)."""
    x, y = (t.permute(2, 0, 1)[None] for t in (img, ref))
    k = _gaussian_kernel(SSIM_WINDOW, SSIM_SIGMA).to(x.device, x.dtype)
    # One blur call over all five maps: fewer, larger convolutions are much cheaper on the CPU.
    mu_x, mu_y, exx, eyy, exy = _blur(torch.cat([x, y, x * x, y * y, x * y], dim=1), k).chunk(5, dim=1)
    sxx = exx - mu_x.square()
    syy = eyy - mu_y.square()
    sxy = exy - mu_x * mu_y
    num = (2 * mu_x * mu_y + SSIM_C1) * (2 * sxy + SSIM_C2)
    den = (mu_x.square() + mu_y.square() + SSIM_C1) * (sxx + syy + SSIM_C2)
    return (num / den).mean()


def l1_dssim(img: Tensor, ref: Tensor, dssim_weight: float = 0.2) -> Tensor:
    """3DGS photometric loss: (1 - w) L1 + w (1 - SSIM)."""
    return (1 - dssim_weight) * (img - ref).abs().mean() + dssim_weight * (1 - ssim(img, ref))


def psnr(img: Tensor, ref: Tensor) -> float:
    mse = (img.detach().clamp(0, 1) - ref).square().mean().item()
    return float("inf") if mse == 0 else -10.0 * torch.log10(torch.tensor(mse)).item()


MOUTH_BOX_PADDING_PX = 6   # the lips' box grows by this much so lip edges and the chin line count


def mouth_box(labels: Tensor) -> tuple[slice, slice] | None:
    """The padded bounding box (rows, columns) of the lips and mouth opening in a frame's labels, or
    None when the frame shows neither."""
    ys, xs = torch.nonzero((labels == LIPS) | (labels == INSIDE_MOUTH), as_tuple=True)
    if ys.numel() == 0:
        return None
    pad, size = MOUTH_BOX_PADDING_PX, labels.shape[0]
    return (slice(max(int(ys.min()) - pad, 0), min(int(ys.max()) + pad + 1, size)),
            slice(max(int(xs.min()) - pad, 0), min(int(xs.max()) + pad + 1, size)))


def mouth_box_l1(image: Tensor, target: Tensor, labels: Tensor) -> Tensor:
    """Mean |image - target| over the padded bounding box of the lips and mouth opening (0 if none):
    at 256^2 the mouth is a few hundred of 65k pixels and barely moves a whole-image loss."""
    box = mouth_box(labels)
    return image.new_zeros(()) if box is None else (image[box] - target[box]).abs().mean()


def mouth_box_dssim(image: Tensor, target: Tensor, labels: Tensor) -> Tensor:
    """1 - SSIM over the same box (0 if none): L1 is content with a blurred average of the teeth, SSIM
    asks for their edges and contrast."""
    box = mouth_box(labels)
    return image.new_zeros(()) if box is None else 1 - ssim(image[box], target[box])


def label_alpha(alpha: Tensor, labels: Tensor, label: int) -> Tensor:
    """Mean of ``alpha`` (H, W[, 1]) over the pixels whose label is ``label`` (0 if there are none): how
    much a layer covers a region the frame shows as something else. TalkingGaussian-style recipes
    penalise the face layer's alpha over the real mouth opening, where the inside-mouth layer (teeth,
    tongue) must show through (docs/fidelity.md: without it the face layer painted a blurred average
    mouth over the opening and the lips never parted far enough)."""
    region = labels == label
    if not bool(region.any()):
        return alpha.new_zeros(())
    return alpha.reshape(labels.shape)[region].mean()


# The eye region: a box around each eye contour, EYE_BOX_WIDTH x the eye's corner-to-corner width
# wide and EYE_BOX_HEIGHT x that width high, so it holds both lids whether the eye is open or shut
# (the eye labels of a shut eye cover almost nothing, so boxes come from the landmarks).
EYE_BOX_WIDTH = 1.3
EYE_BOX_HEIGHT = 0.7


def eye_boxes(landmarks: np.ndarray, height: int, width: int) -> list[tuple[slice, slice]]:
    """(rows, cols) boxes of the two eyes from one frame's (478, 2+) landmarks in pixels of an image of
    ``height`` x ``width``; empty when an eye landmark is missing (NaN)."""
    from talksplat.core.landmarks import LEFT_EYE, RIGHT_EYE

    lm = np.asarray(landmarks, np.float64)[:, :2]
    if not np.all(np.isfinite(lm[list(LEFT_EYE + RIGHT_EYE)])):
        return []
    boxes = []
    for eye in (RIGHT_EYE, LEFT_EYE):
        pts = lm[list(eye)]
        centre = (pts.min(axis=0) + pts.max(axis=0)) / 2
        eye_width = float(np.ptp(pts[:, 0]))
        half = np.array([EYE_BOX_WIDTH * eye_width / 2, EYE_BOX_HEIGHT * eye_width / 2])
        x0, y0 = np.maximum(np.floor(centre - half).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(centre + half).astype(int) + 1, [width, height])
        if x1 > x0 and y1 > y0:
            boxes.append((slice(int(y0), int(y1)), slice(int(x0), int(x1))))
    return boxes


def eye_box_l1(image: Tensor, target: Tensor, landmarks: np.ndarray) -> Tensor:
    """Mean |image - target| over the two eye boxes (:func:`eye_boxes`; 0 without landmarks): the
    eyes are ~1% of a 256^2 frame, and a blink, a few frames in a hundred, barely moves a whole-image
    loss, so without this term the expression-driven motion never learned to close the lids."""
    boxes = eye_boxes(landmarks, image.shape[0], image.shape[1])
    if not boxes:
        return image.new_zeros(())
    diffs = [(image[rows, cols] - target[rows, cols]).abs().reshape(-1) for rows, cols in boxes]
    return torch.cat(diffs).mean()


def anchor_weights(points: Tensor, anchors: Tensor, radius: float) -> Tensor:
    """[K, N] row-normalised weights of the ``points`` within ``radius`` of each anchor (no
    gradient; a row with no point in reach is all zeros)."""
    with torch.no_grad():
        near = (torch.cdist(anchors.to(points), points.detach()) <= radius).to(points.dtype)
        return near / near.sum(dim=1, keepdim=True).clamp(min=1.0)


def landmark_motion_l1(displacements: Tensor, anchors: Tensor, w2c: Tensor, K: Tensor, target: Tensor) -> Tensor:
    """Mean pixel distance (L1 over x and y) between the anchors moved by ``displacements`` [K, 3]
    and projected, and ``target`` [K, 2] (NaN rows skipped): a geometric teacher for a motion field
    beside the image terms (docs/fidelity.md, "a lip-landmark term")."""
    moved, _ = project_points(anchors + displacements, w2c, K)
    valid = torch.isfinite(target).all(dim=1)
    if not bool(valid.any()):
        return displacements.new_zeros(())
    return (moved[valid] - target[valid]).abs().mean()


def image_gradients(image: Tensor) -> tuple[Tensor, Tensor]:
    """Horizontal and vertical neighbour differences of an (H, W, C) image."""
    return image[:, 1:] - image[:, :-1], image[1:] - image[:-1]


def structure_loss(image: Tensor, target: Tensor) -> Tensor:
    """D-SSIM plus the L1 between image gradients: structure and edges. The recipes' named offline
    SUBSTITUTE for a perceptual (LPIPS/VGG) loss, whose weights are not available offline."""
    gx, gy = image_gradients(image)
    tx, ty = image_gradients(target)
    return (1 - ssim(image, target)) + (gx - tx).abs().mean() + (gy - ty).abs().mean()


def motion_magnitude(d: Deformation) -> Tensor:
    """|d mean| + |d rotation| + |d opacity| + |d scale|, each a mean over Gaussians and components
    (UniGS's motion regularisation; an L1, so a few Gaussians may move far - lids, lips - while the
    many that should stay put are held still)."""
    return d.d_means.abs().mean() + d.d_quats.abs().mean() + d.d_opacity_logits.abs().mean() + \
        d.d_log_scales.abs().mean()
