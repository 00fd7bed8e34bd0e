"""Per-frame semantic label maps from face landmarks plus MediaPipe selfie segmentation.

No installable package ships face-parsing weights (BiSeNet etc.), so the labels are built from
geometry: the face, eyes, lips and the inside of the mouth are landmark polygons (exact where the
landmarks are right); the person/background split is MediaPipe's selfie segmentation; hair, neck
and torso split the rest of the person by where it lies relative to the jaw line.

Labels (the same numbers as the synthetic ground truth): ``talksplat.core.labels``.
"""

from __future__ import annotations

from typing import Self

import cv2
import numpy as np

from talksplat.core.labels import BACKGROUND, EYE_LEFT, EYE_RIGHT, HAIR, INSIDE_MOUTH, LIPS, NECK, SKIN, TORSO
from talksplat.core.landmarks import (
    CHIN,
    FACE_OVAL,
    INNER_LIP_PAIRS,
    INNER_LIPS,
    LEFT_CHEEK,
    LEFT_EYE,
    OUTER_LIPS,
    RIGHT_CHEEK,
    RIGHT_EYE,
)
from talksplat.tracking.native_log import native_stderr_settled, native_stderr_silenced

PERSON_THRESHOLD = 0.5
# The neck: below the jaw, within this many face widths of the chin horizontally, and down to
# this many face heights below the chin. Everything else of the person below the jaw is torso.
NECK_HALF_WIDTH_FACES = 0.32
NECK_LENGTH_FACES = 0.45
SKIN_CHROMA_DISTANCE = 14.0       # Lab a*b* distance (8-bit OpenCV scale) that still counts as skin
SKIN_SAMPLE_STEP = 4               # face pixels sampled for the skin colour (every 4th row/column)
PLATE_MARGIN_FRACTION = 0.012      # background pixels this close (x size) to the person are not used
PLATE_MAX_FRAMES = 120             # frames used for the background median (evenly spaced)
INPAINT_RADIUS_PX = 5


def fill_polygon(mask: np.ndarray, points: np.ndarray, value: int) -> None:
    """Set ``mask`` to ``value`` at every pixel whose centre lies inside the polygon (even-odd rule).

    Pixel centres are at integer coordinates (pixel ``(x, y)`` covers ``[x-0.5, x+0.5] x
    [y-0.5, y+0.5]``), so a pixel is labelled when (for locally straight edges) at least half of it
    is covered: the labelled area equals the polygon's area on average, at any sub-pixel position.
    ``cv2.fillPoly`` instead also fills every pixel its outline touches, which grows each polygon by
    about half a pixel all round: +23% area for a 24 x 6 px elliptic mouth opening, +72% at 10 x 2.

    Args:
        mask: (H, W) array, modified in place; points: (N, >=2) polygon vertices in pixels (N >= 3).
    """
    h, w = mask.shape[:2]
    p = np.asarray(points, dtype=np.float64)[:, :2]
    if p.shape[0] < 3 or not np.isfinite(p).all():
        return
    q = np.roll(p, -1, axis=0)                                   # each edge runs p[i] -> q[i]
    y_lo = max(int(np.ceil(p[:, 1].min())), 0)
    y_hi = min(int(np.floor(p[:, 1].max())), h - 1)
    x_lo = max(int(np.ceil(p[:, 0].min())), 0)
    x_hi = min(int(np.floor(p[:, 0].max())), w - 1)
    if y_hi < y_lo or x_hi < x_lo:
        return
    ys = np.arange(y_lo, y_hi + 1, dtype=np.float64)[:, None]   # pixel-centre rows
    ya, yb = p[None, :, 1], q[None, :, 1]
    # Half-open in y, so a vertex on a row is counted once and horizontal edges never.
    cross = ((ya <= ys) & (ys < yb)) | ((yb <= ys) & (ys < ya))
    with np.errstate(divide="ignore", invalid="ignore"):
        x = p[None, :, 0] + (ys - ya) * (q[None, :, 0] - p[None, :, 0]) / (yb - ya)
    x = np.sort(np.where(cross, x, np.inf), axis=1)
    pairs = int(cross.sum(axis=1).max()) // 2
    if pairs == 0:
        return
    # Inside between each enter/leave pair: columns c (relative to x_lo) with enter <= c < leave.
    enter = np.ceil(x[:, 0:2 * pairs:2] - x_lo)
    leave = np.ceil(x[:, 1:2 * pairs:2] - x_lo)                  # inf where a row has fewer pairs
    cols = np.arange(x_hi - x_lo + 1, dtype=np.float64)
    inside = (cols >= enter[:, :1]) & (cols < leave[:, :1])
    for k in range(1, pairs):
        inside |= (cols >= enter[:, k:k + 1]) & (cols < leave[:, k:k + 1])
    mask[y_lo:y_hi + 1, x_lo:x_hi + 1][inside] = value


def _above_jaw(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """bool (H, W): pixels above the jaw line (the lower face oval, extended sideways at ear height)."""
    _h, w = shape
    oval = list(FACE_OVAL)
    start, end = oval.index(LEFT_CHEEK), oval.index(RIGHT_CHEEK)
    lower_arc = landmarks[oval[start:end + 1], :2]                # from the left cheek, under the chin
    left, right = landmarks[LEFT_CHEEK, :2], landmarks[RIGHT_CHEEK, :2]
    # In the image the subject's left cheek is on the right side (x larger) when facing the camera.
    far_a = np.array([w + 1.0, left[1]]) if left[0] >= right[0] else np.array([-1.0, left[1]])
    far_b = np.array([-1.0, right[1]]) if left[0] >= right[0] else np.array([w + 1.0, right[1]])
    top_b, top_a = np.array([far_b[0], -1.0]), np.array([far_a[0], -1.0])
    poly = np.vstack([far_a, lower_arc, far_b, top_b, top_a])
    mask = np.zeros(shape, np.uint8)
    fill_polygon(mask, poly, 1)
    return mask.astype(bool)


REST_GAP_PERCENTILE = 5          # the clip's most-closed frames define each pair's rest gap


def closed_mouth_corrected_lips(landmarks: np.ndarray) -> np.ndarray:
    """Inner-lip contours (T, 20, 2) with MediaPipe's resting gap removed.

    MediaPipe's inner-lip points sit on the lips' inner edge, a little into the red: even with
    the lips pressed together the polygon keeps a sliver of area, and open mouths come out too
    tall. For every facing upper/lower pair we take the clip's resting gap (a low percentile of
    the pair's distance, in inter-ocular units so it follows the head's scale) and move both
    points towards each other by half of it in every frame (never past each other).

    Args:
        landmarks: (T, 478, >=2) pixel landmarks.
    Returns:
        (T, 20, 2) float64 contour in INNER_LIPS order.
    """
    lm = landmarks[..., :2].astype(np.float64)
    iod = np.linalg.norm(lm[:, 33] - lm[:, 263], axis=1)[:, None]
    index = {v: k for k, v in enumerate(INNER_LIPS)}
    contour = lm[:, list(INNER_LIPS)].copy()
    for lower, upper in INNER_LIP_PAIRS:
        d = lm[:, lower] - lm[:, upper]
        gap = np.linalg.norm(d, axis=1, keepdims=True)
        rest = np.percentile(gap / iod, REST_GAP_PERCENTILE) * iod
        move = 0.5 * np.minimum(rest, gap) * d / np.maximum(gap, 1e-9)
        contour[:, index[upper]] += move
        contour[:, index[lower]] -= move
    return contour


def _skin_reference(image: np.ndarray, face: np.ndarray) -> np.ndarray:
    """Median Lab colour (3,) of the face pixels (every ``SKIN_SAMPLE_STEP``-th row and column)."""
    step = SKIN_SAMPLE_STEP
    sub_img, sub_face = image[::step, ::step], face[::step, ::step]
    lab = cv2.cvtColor(np.ascontiguousarray(sub_img), cv2.COLOR_RGB2LAB).reshape(-1, 3)
    pick = sub_face.reshape(-1)
    return np.median(lab[pick] if pick.any() else lab, axis=0).astype(np.float32)


def _neck_zone(lm: np.ndarray, shape: tuple[int, int], image: np.ndarray | None, face: np.ndarray) -> np.ndarray:
    """bool (H, W): the rectangle under the chin where the neck can be, skin-coloured pixels only."""
    face_w = float(np.linalg.norm(lm[LEFT_CHEEK] - lm[RIGHT_CHEEK]))
    face_h = float(np.ptp(lm[list(FACE_OVAL), 1]))
    chin = lm[CHIN]
    x0 = max(int(np.ceil(chin[0] - NECK_HALF_WIDTH_FACES * face_w)), 0)
    x1 = min(int(np.floor(chin[0] + NECK_HALF_WIDTH_FACES * face_w)) + 1, shape[1])
    y1 = min(int(np.floor(chin[1] + NECK_LENGTH_FACES * face_h)) + 1, shape[0])
    zone = np.zeros(shape, bool)
    if x1 <= x0 or y1 <= 0:
        return zone
    if image is None:
        zone[:y1, x0:x1] = True
        return zone
    ref = _skin_reference(image, face)
    lab = cv2.cvtColor(np.ascontiguousarray(image[:y1, x0:x1]), cv2.COLOR_RGB2LAB).astype(np.float32)
    chroma = np.hypot(lab[..., 1] - ref[1], lab[..., 2] - ref[2])
    zone[:y1, x0:x1] = chroma <= SKIN_CHROMA_DISTANCE
    return zone


def label_map(landmarks: np.ndarray, person_prob: np.ndarray, image: np.ndarray | None = None,
              inner_lips: np.ndarray | None = None) -> np.ndarray:
    """Labels of one frame.

    Args:
        landmarks: (478, >=2) pixel landmarks in this image; person_prob: (H, W) float in [0, 1];
        image: (H, W, 3) uint8 RGB, optional: when given, the neck zone keeps only skin-coloured
        pixels (a collar or scarf under the chin is torso); inner_lips: (20, 2) optional corrected
        inner-lip contour (see :func:`closed_mouth_corrected_lips`), else the raw landmarks.
    Returns:
        (H, W) uint8 labels (see ``talksplat.core.labels``).
    """
    shape = person_prob.shape
    lm = landmarks[:, :2].astype(np.float64)
    person = person_prob >= PERSON_THRESHOLD
    face = np.zeros(shape, np.uint8)
    fill_polygon(face, lm[list(FACE_OVAL)], 1)
    face = face.astype(bool)
    above = _above_jaw(lm, shape)
    labels = np.zeros(shape, np.uint8)
    body = person & ~face
    labels[body & above] = HAIR
    below = body & ~above
    neck_zone = _neck_zone(lm, shape, image, face)
    labels[below & neck_zone] = NECK
    labels[below & ~neck_zone] = TORSO
    # Landmark polygons, drawn from the outside in.
    labels[face] = SKIN
    fill_polygon(labels, lm[list(RIGHT_EYE)], EYE_RIGHT)
    fill_polygon(labels, lm[list(LEFT_EYE)], EYE_LEFT)
    fill_polygon(labels, lm[list(OUTER_LIPS)], LIPS)
    fill_polygon(labels, lm[list(INNER_LIPS)] if inner_lips is None else inner_lips, INSIDE_MOUTH)
    return labels


class PersonSegmenter:
    """MediaPipe selfie segmentation (general model, shipped in the mediapipe 0.10.21 wheel)."""

    def __init__(self) -> None:
        import mediapipe as mp

        with native_stderr_settled():   # the graph starts in native threads that log after this returns
            self._seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
        self._ran = False

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (H, W) float32 person probability."""
        # The first call starts the graph's calculators, which log from a native thread after it returns.
        silenced = native_stderr_settled if not self._ran else native_stderr_silenced
        self._ran = True
        with silenced():
            result = self._seg.process(np.ascontiguousarray(image))
        return np.asarray(result.segmentation_mask, dtype=np.float32)

    def close(self) -> None:
        with native_stderr_silenced():
            self._seg.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def background_plate(frames: np.ndarray, labels: np.ndarray, max_frames: int = PLATE_MAX_FRAMES
                     ) -> tuple[np.ndarray, np.ndarray]:
    """A clean background: the per-pixel median over frames where the pixel is background.

    Pixels never seen as background are inpainted (OpenCV Telea).

    Args:
        frames: (T, S, S, 3) uint8 (may be a memmap); labels: (T, S, S) uint8.
    Returns:
        plate (S, S, 3) uint8, seen (S, S) bool (False where inpainted).
    """
    num = frames.shape[0]
    pick = np.unique(np.linspace(0, num - 1, min(max_frames, num)).round().astype(int))
    size = frames.shape[1]
    margin = max(round(PLATE_MARGIN_FRACTION * size), 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    invalid = np.uint16(1024)
    stack = np.empty((pick.size,) + frames.shape[1:], np.uint16)
    for i, t in enumerate(pick):
        bg = cv2.erode((labels[t] == BACKGROUND).astype(np.uint8), kernel).astype(bool)
        stack[i] = np.where(bg[..., None], frames[t], invalid)
    # Median of the valid values: sort (invalid values go last) and take the middle valid one.
    stack.sort(axis=0)
    count = (stack < invalid).sum(axis=0)             # (S, S, 3), equal across channels
    mid = np.maximum(count - 1, 0) // 2
    plate = np.take_along_axis(stack, mid[None], axis=0)[0]
    seen = count[..., 0] > 0
    plate = np.where(seen[..., None], plate, 0).astype(np.uint8)
    if not seen.all():
        plate = cv2.inpaint(plate, (~seen).astype(np.uint8), INPAINT_RADIUS_PX, cv2.INPAINT_TELEA)
    return plate, seen
