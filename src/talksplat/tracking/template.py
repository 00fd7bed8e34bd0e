"""A metric 3D face template (MediaPipe's canonical face model) and semantic regions of the mesh.

The template is MediaPipe's canonical face geometry (Apache-2.0, bundled under
``assets/geometry``): an average human face in centimetres, independent of the footage. We use
it in the **head frame** of talksplat (millimetres; x from the subject's right eye to her left
eye, y down, z into the head; origin midway between vertices 234 and 454), the same convention
as the synthetic subject's ground truth.

Why not a template averaged from MediaPipe's per-frame 3D landmarks: their x, y are image
projections (perspective already baked in) and z is a weak-perspective guess, so such a template
is nearly orthographic and a focal-length search over it never converges (docs/dataset.md).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talksplat.core.landmarks import (
    INNER_LIPS,
    LEFT_BROW_LOWER,
    LEFT_BROW_UPPER,
    LEFT_CHEEK,
    LEFT_EYE,
    LEFT_EYE_OUTER,
    MOUTH_CORNERS,
    NUM_MESH_VERTICES,
    OUTER_LIPS,
    RIGHT_BROW_LOWER,
    RIGHT_BROW_UPPER,
    RIGHT_CHEEK,
    RIGHT_EYE,
    RIGHT_EYE_OUTER,
)

GEOMETRY_DIR = Path(__file__).resolve().parent.parent / "assets" / "geometry"
CANONICAL_OBJ = GEOMETRY_DIR / "canonical_face_model_vertices.obj"
FACE_ASSET = Path(__file__).resolve().parent.parent / "assets" / "face" / "astronaut_facemesh.npz"

CM_TO_MM = 10.0

# Semantic weights of landmarks/keypoints in the rigid pose fit: points that move with
# expressions (eyelids, brows, lips, the jaw) would drag the head pose along with them.
WEIGHT_RIGID = 1.0
WEIGHT_EYE = 0.2
WEIGHT_BROW = 0.3
WEIGHT_LIPS = 0.1
WEIGHT_JAW = 0.3
# The jaw region: mesh vertices lower than the mouth corners by more than this (head frame, mm).
JAW_BELOW_MOUTH_MM = 2.0
# Eyelid and brow regions include mesh vertices this close (mm) to the contour points above.
REGION_RADIUS_MM = 6.0


@dataclass(frozen=True)
class FaceTemplate:
    """A rigid 3D face: vertices (468, 3) float64 in millimetres in the head frame."""

    vertices: np.ndarray
    triangles: np.ndarray      # (F, 3) int: MediaPipe's face tessellation (for barycentric lookups)
    weights: np.ndarray        # (468,) semantic weight of each vertex in rigid fits
    name: str = "mediapipe-canonical-face"

    @property
    def eye_corner_distance_mm(self) -> float:
        """Distance between the outer eye corners 33 and 263 (a scale reference)."""
        return float(np.linalg.norm(self.vertices[RIGHT_EYE_OUTER] - self.vertices[LEFT_EYE_OUTER]))


def _parse_obj_vertices(path: Path) -> np.ndarray:
    rows = [line.split()[1:4] for line in path.read_text().splitlines() if line.startswith("v ")]
    verts = np.array(rows, dtype=np.float64)
    if verts.shape != (NUM_MESH_VERTICES, 3):
        raise RuntimeError(f"{path}: expected {NUM_MESH_VERTICES} vertices, found {verts.shape[0]}")
    return verts


def canonical_to_head_frame(obj_vertices_cm: np.ndarray) -> np.ndarray:
    """OBJ coordinates (cm, x to subject's left, y up, z out of the face) -> head frame (mm).

    Flipping y and z is a 180-degree rotation about x, so the frame stays right-handed.
    """
    verts = obj_vertices_cm * np.array([CM_TO_MM, -CM_TO_MM, -CM_TO_MM])
    origin = 0.5 * (verts[RIGHT_CHEEK] + verts[LEFT_CHEEK])
    return verts - origin


def semantic_weights(vertices: np.ndarray) -> np.ndarray:
    """Per-vertex weights for rigid fitting: (468,) in (0, 1]; eyes, brows, lips, jaw down-weighted."""
    weights = np.full(len(vertices), WEIGHT_RIGID)
    mouth_line = vertices[list(MOUTH_CORNERS), 1].mean()
    weights[vertices[:, 1] > mouth_line + JAW_BELOW_MOUTH_MM] = WEIGHT_JAW

    def near(indices: tuple[int, ...]) -> np.ndarray:
        d = np.linalg.norm(vertices[:, None, :] - vertices[list(indices)][None], axis=2)
        return d.min(axis=1) < REGION_RADIUS_MM

    weights[near(RIGHT_BROW_UPPER + RIGHT_BROW_LOWER + LEFT_BROW_UPPER + LEFT_BROW_LOWER)] = WEIGHT_BROW
    weights[near(RIGHT_EYE + LEFT_EYE)] = WEIGHT_EYE
    weights[near(INNER_LIPS + OUTER_LIPS)] = WEIGHT_LIPS
    return weights


@functools.lru_cache(maxsize=1)
def load_canonical_template() -> FaceTemplate:
    """MediaPipe's canonical face in the talksplat head frame (millimetres)."""
    verts = canonical_to_head_frame(_parse_obj_vertices(CANONICAL_OBJ))
    with np.load(FACE_ASSET) as data:
        triangles = np.asarray(data["face_triangles"], dtype=np.int64)
    return FaceTemplate(vertices=verts, triangles=triangles, weights=semantic_weights(verts))
