"""A landmark rig: points that follow the displacements of a few landmarks (a shared part).

Why: a motion field learns the lips' motion from image gradients alone, and those reach a Gaussian
only where it already overlaps the edge it should move to. Between the conditions of the most open
and the most shut training frames, the TalkingGaussian face layer's inner-lip Gaussians parted by
5.0 mm (Obama) and 4.6 mm (Andrew) where the tracked inner-lip landmarks part by 15.8 and 17.4 mm
(docs/fidelity.md), and the rest of the opening was a blurred average mouth. A rig moves each point
by a blend of its nearest landmarks' displacements - linear in a few per-frame state numbers (the
lip state: tracked in training, predicted from audio when rendering) - so the motion field is left
with the residual.

Weights come from the points' current positions at every call (no per-point state), so they
survive densification and pruning unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def rig_weights(points: Tensor, anchors: Tensor, sigma: float, reach: float) -> Tensor:
    """[N, K] how much each point follows each anchor (no gradient).

    A softmax over the anchors of ``-d^2 / (2 sigma^2)`` (a point between the upper and lower lip
    follows the nearer one, not their average), times ``exp(-d_min^2 / (2 reach^2))`` so points far
    from every anchor (the forehead) stay where they are.
    """
    if sigma <= 0 or reach <= 0:
        raise ValueError("rig sigma and reach must be > 0")
    with torch.no_grad():
        # Elementwise, not the matrix-product form (|a|^2 + |b|^2 - 2ab): no cancellation for the
        # millimetre distances that matter here, and no BLAS call whose last bits may follow the
        # memory layout (a resumed run must continue bit for bit).
        d2 = torch.cdist(points.detach(), anchors.to(points), compute_mode="donot_use_mm_for_euclid_dist").square()
        blend = torch.softmax(-d2 / (2 * sigma ** 2), dim=1)
        fade = torch.exp(-d2.min(dim=1, keepdim=True).values / (2 * reach ** 2))
        return blend * fade


class LandmarkRig(nn.Module):
    """Per-frame states [S] -> displacements [N, 3] of points near ``anchors`` [K, 3].

    ``basis`` [S, K, 3] holds each state's displacement of every anchor (the anchors move by
    ``states @ basis``). Both are buffers, so a checkpoint carries the rig it was trained with.
    """

    def __init__(self, anchors: Tensor, basis: Tensor, sigma: float, reach: float) -> None:
        super().__init__()
        if anchors.ndim != 2 or anchors.shape[1] != 3 or basis.ndim != 3 or basis.shape[1:] != anchors.shape:
            raise ValueError(f"rig needs anchors [K, 3] and basis [S, K, 3] (got {tuple(anchors.shape)}, "
                             f"{tuple(basis.shape)})")
        self.sigma, self.reach = float(sigma), float(reach)
        self.register_buffer("anchors", anchors.float().clone())
        self.register_buffer("basis", basis.float().clone())
        self._cached: tuple[tuple[Tensor, Tensor], Tensor] | None = None

    def anchor_displacements(self, states: Tensor) -> Tensor:
        """[S] -> [K, 3]."""
        return torch.einsum("s,skd->kd", states.to(self.basis), self.basis)

    def forward(self, points: Tensor, states: Tensor, planar: bool = False) -> Tensor:
        """[N, 3] displacement of each point under the frame's ``states`` [S]. ``planar``: weights
        from the distance in x and y only (points behind the landmarks, such as teeth behind the
        lips, follow the landmark in front of them)."""
        return self._weights(points, planar) @ self.anchor_displacements(states)

    def _weights(self, points: Tensor, planar: bool) -> Tensor:
        # Rendering asks again for the same still points every frame (9 ms for 30k Gaussians on one
        # core): while gradients are off, keep the last weights with a copy of the points and anchors
        # they came from, and reuse them only for equal values (a memory address and version can
        # repeat after densification; comparing the values costs ~0.1 ms).
        axes = slice(0, 2) if planar else slice(0, 3)
        points, anchors = points[:, axes].detach(), self.anchors[:, axes]
        if torch.is_grad_enabled():
            self._cached = None
            return rig_weights(points, anchors, self.sigma, self.reach)
        if self._cached is not None:
            (seen_points, seen_anchors), weights = self._cached
            if torch.equal(seen_points, points) and torch.equal(seen_anchors, anchors):
                return weights
        weights = rig_weights(points, anchors, self.sigma, self.reach)
        self._cached = ((points.clone(), anchors.clone()), weights)
        return weights
