"""Held-out scores the engine reports after every stage (any recipe): PSNR and SSIM over the crop,
PSNR over the head box, and how well the rendered mouth opening follows the real one."""

from __future__ import annotations

import numpy as np
import torch

from talksplat.engine.contract import Recipe, View
from talksplat.engine.losses import psnr, ssim


def to_uint8(image: torch.Tensor) -> np.ndarray:
    return (image.clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)


@torch.no_grad()
def evaluate_held_out(recipe: Recipe, frames: np.ndarray, track_lips: bool = True) -> dict:
    """Scores ``recipe`` on held-out ``frames`` rendered from the subject's own audio and expressions.

    Full-crop PSNR is flattered by the exact backdrop, so the head box is the honest figure. Lip
    motion is scored on renders over one fixed backdrop: a frame's own backdrop (its real torso and
    neck) outlines the real jaw and would show the tracker the real mouth opening. The same without
    deformation (``..._undeformed``) is the floor: head pose alone correlates with mouth opening.
    """
    data = recipe.data
    psnrs, ssims, head_psnrs, rendered_u8, static_u8, real_u8 = [], [], [], [], [], []
    fixed_backdrop = data.backdrop(int(data.train_frames[0]))
    for t in (int(f) for f in frames):
        out, target = recipe.render_own(t), data.image(t)
        rendered = out["image"].clamp(0, 1)
        psnrs.append(psnr(rendered, target))
        ssims.append(ssim(rendered, target).item())
        box = data.head_box(t)
        if box is not None:
            head_psnrs.append(psnr(rendered[box], target[box]))
        if track_lips:
            rendered_u8.append(to_uint8(out["head"] + (1.0 - out["alpha"]) * fixed_backdrop))
            undeformed = recipe.forward(View(t, backdrop=fixed_backdrop), None)["image"]
            static_u8.append(to_uint8(undeformed))
            real_u8.append(to_uint8(target))
    scores = {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)),
              "psnr_head_box": float(np.mean(head_psnrs)) if head_psnrs else None, "frames": len(psnrs)}
    if track_lips:
        scores["mouth_opening_corr"] = mouth_opening_agreement(rendered_u8, real_u8)
        scores["mouth_opening_corr_undeformed"] = mouth_opening_agreement(static_u8, real_u8)
    return scores


def mouth_opening_agreement(rendered: list[np.ndarray], real: list[np.ndarray]) -> float | None:
    """Correlation of the tracked mouth opening of rendered vs real frames (lip-motion fidelity)."""
    from talksplat.tracking.facemesh import mouth_opening, nan_correlation, track_frames

    if len(rendered) < 3:
        return None
    return nan_correlation(mouth_opening(track_frames(rendered)), mouth_opening(track_frames(real)))
