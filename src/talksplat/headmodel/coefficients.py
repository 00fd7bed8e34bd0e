"""SyncTalk++'s 7 core expression coefficients from fitted ARKit-named blendshape weights.

SyncTalk++ keeps, of the 52 ARKit coefficients, brow down L/R, brow inner up, brow outer up L/R and
eye blink L/R. ICT-FaceKit splits browInnerUp into _L and _R: their mean stands for the one ARKit
coefficient. The names and order are those of ``features.expression.CORE_NAMES`` (the
landmark-geometry version), so the two can be swapped column for column. No per-clip
normalisation: blendshape weights are already on an absolute [0, 1] scale.
"""

from __future__ import annotations

import numpy as np

from talksplat.features.expression import CORE_NAMES

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
