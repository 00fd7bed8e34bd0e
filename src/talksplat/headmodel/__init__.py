"""A morphable head model (ICT-FaceKit, MIT; bundled) fitted to MediaPipe landmarks.

- :func:`load_head_model`: the model in the talksplat head frame (mm, y down, z into the head);
  :func:`mesh_vertices` builds meshes from (identity, expression, pose).
- :func:`load_correspondence` / :class:`LandmarkBasis`: where the 478 FaceMesh landmarks sit on it.
- :func:`fit_sequence`: identity + per-frame expressions (53, in [0, 1]) + poses from landmarks.
- :func:`core_coefficients`: SyncTalk++'s 7 core coefficients from the fitted blendshapes;
  :func:`mouth_opening_mm`: the model's inner-lip gap (its mouth-opening combination of blendshapes).
See docs/headmodel.md.
"""

from talksplat.headmodel.coefficients import CORE_FROM_BLENDSHAPES, core_coefficients, mouth_opening_mm
from talksplat.headmodel.correspondence import (
    Correspondence,
    LandmarkBasis,
    default_landmark_basis,
    load_correspondence,
)
from talksplat.headmodel.fit import FaceFit, FitConfig, fit_sequence, poses_from_cameras
from talksplat.headmodel.model import HeadModel, load_head_model, mesh_vertices

__all__ = [
    "CORE_FROM_BLENDSHAPES",
    "Correspondence",
    "FaceFit",
    "FitConfig",
    "HeadModel",
    "LandmarkBasis",
    "core_coefficients",
    "default_landmark_basis",
    "fit_sequence",
    "load_correspondence",
    "load_head_model",
    "mesh_vertices",
    "mouth_opening_mm",
    "poses_from_cameras",
]
