"""Where MediaPipe's 478 FaceMesh landmarks sit on the head model: one point per landmark, as
barycentric coordinates on a model triangle (made once by ``build_correspondence``, bundled as
``assets/mediapipe_correspondence.npz``; see docs/headmodel.md for how).

:class:`LandmarkBasis` restricts the linear model to those points, so fitting a frame costs a
(53 x 1434) product instead of a 24,591-vertex mesh.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from talksplat.core.landmarks import LEFT_IRIS, NUM_LANDMARKS, RIGHT_IRIS
from talksplat.errors import TalksplatError
from talksplat.headmodel.model import ASSET_DIR, HeadModel, gaze_angles, rotate_about

CORRESPONDENCE_FILE = ASSET_DIR / "mediapipe_correspondence.npz"
NUM_MEDIAPIPE = NUM_LANDMARKS
# Iris landmarks (centre first, then the ring) and their directions from the centre in the head frame
# (measured on a frontal face: 469 lies towards the subject's left, 470 above, 471 right, 472 below).
IRIS_LANDMARKS = {"R": RIGHT_IRIS, "L": LEFT_IRIS}
IRIS_RING_DIRECTIONS = ((1.0, 0.0), (0.0, -1.0), (-1.0, 0.0), (0.0, 1.0))
EYEBALL_REGION = {"L": "eyeball_left", "R": "eyeball_right"}


@dataclass(frozen=True)
class Correspondence:
    """Landmark ``mediapipe_index[i]`` sits at ``sum_k barycentric[i, k] * vertex[triangle[i, k]]``."""

    mediapipe_index: np.ndarray    # (N,) int
    triangle: np.ndarray           # (N, 3) int vertex indices
    barycentric: np.ndarray        # (N, 3) float, rows sum to 1
    info: dict

    def points(self, vertices: np.ndarray) -> np.ndarray:
        """Landmark positions (..., N, 3) on meshes (..., V, 3)."""
        return np.einsum("...nkc,nk->...nc", vertices[..., self.triangle, :], self.barycentric)


@functools.lru_cache(maxsize=1)
def load_correspondence() -> Correspondence:
    if not CORRESPONDENCE_FILE.exists():
        raise TalksplatError(f"{CORRESPONDENCE_FILE} is missing: run `python -m "
                             "talksplat.headmodel.build_correspondence` or reinstall talksplat")
    with np.load(CORRESPONDENCE_FILE) as d:
        info = {k: d[k].tolist() for k in d.files if k.startswith("info_")}
        return Correspondence(d["mediapipe_index"].astype(np.int64), d["triangle"].astype(np.int64),
                              d["barycentric"].astype(np.float64), info)


@dataclass
class LandmarkBasis:
    """The model restricted to the landmark points (float32 torch tensors, head frame, mm)."""

    mean: torch.Tensor            # (N, 3)
    identity: torch.Tensor        # (K, N, 3)
    expression: torch.Tensor      # (53, N, 3)
    mediapipe_index: torch.Tensor  # (N,)
    iris_rows: dict[str, torch.Tensor]        # side -> rows of the iris points (turned for gaze)
    eyeball_centre: dict[str, tuple[torch.Tensor, torch.Tensor]]   # side -> (mean (3,), identity (K, 3))
    expression_names: tuple[str, ...]

    @classmethod
    def build(cls, model: HeadModel, corr: Correspondence) -> LandmarkBasis:
        def restrict(arr: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(corr.points(arr).astype(np.float32))

        iris_rows, centres = {}, {}
        for side, idx in IRIS_LANDMARKS.items():
            iris_rows[side] = torch.from_numpy(np.flatnonzero(np.isin(corr.mediapipe_index, idx)))
            ball = model.region(EYEBALL_REGION[side])
            centres[side] = (torch.from_numpy(model.neutral[ball].mean(0)),
                             torch.from_numpy(model.identity_basis[:, ball].mean(1)))
        return cls(restrict(model.neutral), restrict(model.identity_basis), restrict(model.expression_basis),
                   torch.from_numpy(corr.mediapipe_index), iris_rows, centres, model.expression_names)

    def points(self, identity: torch.Tensor, expression: torch.Tensor,
               offsets: torch.Tensor | None = None) -> torch.Tensor:
        """Landmark positions (T, N, 3) in the head frame for identity (K,) and expressions (T, 53);
        ``offsets`` (N, 3) mm move the points on the neutral face (a subject's own landmark placement)."""
        base = self.mean + torch.einsum("k,knc->nc", identity, self.identity)
        if offsets is not None:
            base = base + offsets
        pts = base[None] + torch.einsum("te,enc->tnc", expression, self.expression)
        out = pts
        for side, rows in self.iris_rows.items():
            if rows.numel() == 0:
                continue
            c_mean, c_id = self.eyeball_centre[side]
            centre = c_mean + torch.einsum("k,kc->c", identity, c_id)
            yaw, pitch = gaze_angles(expression, self.expression_names, side)
            turned = rotate_about(pts[:, rows], centre.expand(pts.shape[0], 3), yaw, pitch)
            out = out.index_copy(1, rows, turned)
        return out


@functools.lru_cache(maxsize=1)
def default_landmark_basis() -> LandmarkBasis:
    from talksplat.headmodel.model import load_head_model

    return LandmarkBasis.build(load_head_model(), load_correspondence())
