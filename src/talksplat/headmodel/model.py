"""The ICT-FaceKit morphable head model (MIT, USC ICT), bundled in ``headmodel/assets``.

A mesh is ``neutral + identity @ identity_basis + expression @ expression_basis`` followed by a
rotation of the eyeballs for the ``eyeLook*`` weights (the source's eyeLook shapes move only the
eyelids; gaze is an eyeball rotation, added here so iris landmarks can be fitted).

Everything is converted on load to the talksplat **head frame** (millimetres; x from the subject's
right eye to her left, y down, z into the head; the source is in cm with y up and +z out of the
face: a 180-degree rotation about x, so the frame stays right-handed). The origin is the source's
(inside the head, between the ears). The same axes as ``tracking.template`` and the cameras of
``prepare``: a frontal head has a rotation near the identity.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from talksplat.errors import TalksplatError

ASSET_DIR = Path(__file__).resolve().parent / "assets"
MODEL_FILE = ASSET_DIR / "ict_face_model.npz"
CM_TO_HEAD_FRAME = np.array([10.0, -10.0, -10.0])   # cm, y up, z out -> mm, y down, z in

# Gaze: an eyeLook weight of 1 turns the eyeball by this much (ARKit's eyeLook* reach the limit of
# comfortable gaze, about 30 degrees sideways; 25 up/down is the commoner vertical range).
GAZE_YAW_DEG_AT_FULL = 30.0
GAZE_PITCH_DEG_AT_FULL = 25.0


@dataclass(frozen=True)
class HeadModel:
    """The linear model in the head frame (float32 numpy arrays; see the module docstring)."""

    neutral: np.ndarray            # (V, 3) mm
    identity_basis: np.ndarray     # (K, V, 3) mm at weight 1 (PCA modes, roughly one std each)
    expression_basis: np.ndarray   # (53, V, 3) mm at weight 1
    expression_names: tuple[str, ...]
    faces: np.ndarray              # (P, 4) int: quads; a triangle has -1 as its 4th index
    triangles: np.ndarray          # (F, 3) int64: the quads split in two
    uv: np.ndarray                 # (U, 2) texture coordinates
    face_uv: np.ndarray            # (P, 4) uv index of each polygon corner
    multipie68: np.ndarray         # (68,) vertex indices of the Multi-PIE / iBUG landmarks
    regions: dict[str, tuple[int, int]]   # geometry name -> vertex range [start, stop)

    @property
    def num_identity(self) -> int:
        return self.identity_basis.shape[0]

    @property
    def num_expressions(self) -> int:
        return self.expression_basis.shape[0]

    def expression_index(self, name: str) -> int:
        return self.expression_names.index(name)

    def region(self, name: str) -> np.ndarray:
        start, stop = self.regions[name]
        return np.arange(start, stop)

    def vertices(self, identity: np.ndarray | None = None, expression: np.ndarray | None = None) -> np.ndarray:
        """(V, 3) float64 mesh in the head frame for one identity (K,) and one expression (53,)."""
        ident = torch.zeros(self.num_identity) if identity is None else torch.as_tensor(identity, dtype=torch.float32)
        expr = (torch.zeros(1, self.num_expressions) if expression is None
                else torch.as_tensor(expression, dtype=torch.float32).reshape(1, -1))
        return mesh_vertices(self, ident, expr)[0].double().numpy()


def split_quads(faces: np.ndarray) -> np.ndarray:
    """(P, 4) polygons (-1 = triangle) -> (F, 3) triangles."""
    first = faces[:, [0, 1, 2]]
    quads = faces[faces[:, 3] >= 0]
    return np.concatenate([first, quads[:, [0, 2, 3]]]).astype(np.int64)


@functools.lru_cache(maxsize=1)
def load_head_model() -> HeadModel:
    """The bundled model (cached)."""
    if not MODEL_FILE.exists():
        raise TalksplatError(f"the bundled head model {MODEL_FILE} is missing: reinstall talksplat")
    with np.load(MODEL_FILE) as d:
        scale = CM_TO_HEAD_FRAME.astype(np.float32)
        regions = {str(n): (int(a), int(b)) for n, (a, b) in zip(d["geometry_names"], d["geometry_ranges"])}
        faces = d["faces"].astype(np.int64)
        return HeadModel(
            neutral=(d["neutral"].astype(np.float32) * scale),
            identity_basis=(d["identity_deltas"].astype(np.float32) * scale),
            expression_basis=(d["expression_deltas"].astype(np.float32) * scale),
            expression_names=tuple(str(s) for s in d["expression_names"]),
            faces=faces, triangles=split_quads(faces), uv=d["uv"], face_uv=d["face_uv"],
            multipie68=d["landmarks_multipie68"].astype(np.int64), regions=regions)


# ---------------------------------------------------------------------------------------------
# Gaze (eyeball rotation), shared by the mesh and the landmark evaluation.
def gaze_angles(expression: torch.Tensor, names: tuple[str, ...], side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Yaw and pitch (radians, (T,)) of one eye ("L" or "R") from the eyeLook weights (T, 53).

    Positive yaw turns the pupil towards +x (the subject's left), positive pitch towards -y (up).
    ``eyeLookOut_L`` looks to the subject's left, ``eyeLookOut_R`` to her right.
    """
    def w(name: str) -> torch.Tensor:
        return expression[:, names.index(f"{name}_{side}")]

    towards_left = w("eyeLookOut") - w("eyeLookIn") if side == "L" else w("eyeLookIn") - w("eyeLookOut")
    yaw = towards_left * np.radians(GAZE_YAW_DEG_AT_FULL)
    pitch = (w("eyeLookUp") - w("eyeLookDown")) * np.radians(GAZE_PITCH_DEG_AT_FULL)
    return yaw, pitch


def rotate_about(points: torch.Tensor, centre: torch.Tensor, yaw: torch.Tensor, pitch: torch.Tensor) -> torch.Tensor:
    """Turn points (T, N, 3) about centre (T, 3): pitch about x, then yaw about y (head frame).

    The pupil faces -z; yaw > 0 moves it to +x, pitch > 0 moves it to -y (up)."""
    p = points - centre[:, None]
    cy, sy = torch.cos(yaw)[:, None], torch.sin(yaw)[:, None]
    cp, sp = torch.cos(pitch)[:, None], torch.sin(pitch)[:, None]
    # pitch: (y, z) -> (y cp + z sp, -y sp + z cp): a pupil at -z goes to -y for pitch > 0.
    y1 = p[..., 1] * cp + p[..., 2] * sp
    z1 = -p[..., 1] * sp + p[..., 2] * cp
    # yaw: (x, z) -> (x cy - z sy, x sy + z cy): a pupil at -z goes to +x for yaw > 0.
    x2 = p[..., 0] * cy - z1 * sy
    z2 = p[..., 0] * sy + z1 * cy
    return torch.stack([x2, y1, z2], dim=-1) + centre[:, None]


def mesh_vertices(model: HeadModel, identity: torch.Tensor, expression: torch.Tensor,
                  rotation: torch.Tensor | None = None, translation: torch.Tensor | None = None) -> torch.Tensor:
    """Meshes (T, V, 3) for one identity (K,) and expressions (T, 53), eyeballs turned for gaze.

    With ``rotation`` (T, 3, 3) and ``translation`` (T, 3) the result is in camera coordinates
    (``X_cam = R X + t``, mm), otherwise in the head frame.
    """
    ident = identity.to(torch.float32)
    expr = expression.to(torch.float32)
    base = torch.from_numpy(model.neutral) + torch.einsum("k,kvc->vc", ident, torch.from_numpy(model.identity_basis))
    verts = base[None] + torch.einsum("te,evc->tvc", expr, torch.from_numpy(model.expression_basis))
    parts = [verts]
    for side, region in (("L", "eyeball_left"), ("R", "eyeball_right")):
        start, stop = model.regions[region]
        ball = verts[:, start:stop]
        yaw, pitch = gaze_angles(expr, model.expression_names, side)
        turned = rotate_about(ball, ball.mean(dim=1), yaw, pitch)
        parts.append((start, stop, turned))
    out = verts.clone()
    for start, stop, turned in parts[1:]:
        out[:, start:stop] = turned
    if rotation is not None:
        out = torch.einsum("tij,tvj->tvi", rotation.to(out.dtype), out)
    if translation is not None:
        out = out + translation.to(out.dtype)[:, None]
    return out
