"""Coefficients derived from fitted blendshape weights: SyncTalk++'s 7 core expression
coefficients, and the model's mouth opening.

SyncTalk++ keeps, of the 52 ARKit coefficients, brow down L/R, brow inner up, brow outer up L/R and
eye blink L/R. ICT-FaceKit splits browInnerUp into _L and _R: their mean stands for the one ARKit
coefficient. The names and order are those of ``features.expression.CORE_NAMES`` (the
landmark-geometry version), so the two can be swapped column for column. No per-clip
normalisation: blendshape weights are already on an absolute [0, 1] scale.
"""

from __future__ import annotations

import numpy as np
import torch

from talksplat.core.landmarks import LOWER_LIP_CENTER, UPPER_LIP_CENTER
from talksplat.features.expression import CORE_NAMES
from talksplat.headmodel.correspondence import LandmarkBasis

# core name -> the model's blendshapes averaged for it ("Left" = the subject's left = ARKit's _L).
CORE_FROM_BLENDSHAPES = {
    "eyeBlinkLeft": ("eyeBlink_L",), "eyeBlinkRight": ("eyeBlink_R",),
    "browDownLeft": ("browDown_L",), "browDownRight": ("browDown_R",),
    "browInnerUp": ("browInnerUp_L", "browInnerUp_R"),
    "browOuterUpLeft": ("browOuterUp_L",), "browOuterUpRight": ("browOuterUp_R",),
}


def core_coefficients(expression: np.ndarray, names: tuple[str, ...] | list[str]) -> np.ndarray:
    """(T, 7) float32 in [0, 1], columns ``CORE_NAMES``, from blendshape weights (T, 53) named ``names``."""
    names = [str(n) for n in names]
    cols = [np.mean([expression[:, names.index(b)] for b in CORE_FROM_BLENDSHAPES[c]], axis=0) for c in CORE_NAMES]
    return np.stack(cols, axis=1).astype(np.float32)


def mouth_opening_mm(basis: LandmarkBasis, identity: np.ndarray, expression: np.ndarray) -> np.ndarray:
    """The model's mouth opening (T,) in mm: how far the lower inner-lip midpoint (MediaPipe 14) sits
    below the upper one (13) on the fitted face, along the head frame's y (down), from the identity
    and the blendshape weights alone (no pose, no per-subject landmark offsets).

    It is a fixed linear combination of the blendshapes (plus the identity's resting gap), so it is
    the model's own mouth-opening measure: jawOpen is one of its terms, but speech also parts the
    lips with mouthFunnel, mouthUpperUp, mouthRoll and mouthShrug. Negative = the model's lips press
    into each other. Identity (K,), expression (T, 53) -> float32 (T,)."""
    rows = [int(np.flatnonzero(basis.mediapipe_index.numpy() == i)[0]) for i in (UPPER_LIP_CENTER, LOWER_LIP_CENTER)]
    with torch.no_grad():
        pts = basis.points(torch.as_tensor(identity, dtype=torch.float32),
                           torch.as_tensor(np.atleast_2d(expression), dtype=torch.float32))
    return (pts[:, rows[1], 1] - pts[:, rows[0], 1]).numpy().astype(np.float32)
