"""Pure-PyTorch reference of the tri-plane hash encoding: the readable definition of the math.

The fast C++ kernel (``csrc/hashgrid.cpp``) must reproduce exactly what this file computes. Gradients
come from autograd, so this works in float32 and float64 and on any device.

Conventions (shared with the kernel):

* ``u = clamp((x + bound) / (2 * bound), 0, 1)``: inputs outside ``[-bound, bound]`` are clamped to
  the border (their gradient w.r.t. ``x`` is zero; points exactly on the bound keep it).
* Plane ``p`` reads the coordinate pair ``PLANE_AXES[p]`` of ``u`` (xy, yz, xz).
* Level ``l`` is a grid of ``R_l`` cells per side, i.e. ``(R_l + 1)^2`` vertices ("align corners").
  A point at ``pos = u * R_l`` lies in cell ``i = min(floor(pos), R_l - 1)`` (so ``u == 1`` uses the
  last cell with fraction 1) and is bilinearly interpolated from the cell's four vertices.
* Vertex ``(ia, ib)`` is stored at ``ia + ib * (R_l + 1)`` when the level's table holds every vertex
  (dense), else at ``(ia * 1) xor (ib * 2654435761) mod T`` in uint32 arithmetic (instant-ngp hash).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

PLANE_NAMES = ("xy", "yz", "xz")
# Input axes read by each plane, in output order. The first axis of a pair is the hash's "x".
PLANE_AXES = ((0, 1), (1, 2), (0, 2))
# instant-ngp's spatial-hash primes for 2D; the first is 1 so coarse rows stay coherent in memory.
HASH_PRIME_A = 1
HASH_PRIME_B = 2654435761
UINT32_MASK = 0xFFFFFFFF
# Cell corners as (da, db) offsets, in the order the weights are built below.
CELL_CORNERS = ((0, 0), (1, 0), (0, 1), (1, 1))


@dataclass(frozen=True)
class GridLayout:
    """Per-level geometry shared by all three planes (derived from a HashGridConfig by
    ``hashgrid.grid_layout``)."""

    resolutions: tuple[int, ...]
    table_sizes: tuple[int, ...]
    offsets: tuple[int, ...]
    hashed: tuple[bool, ...]
    entries_per_plane: int


def normalize_inputs(x: Tensor, bound: float) -> Tensor:
    """Map ``[-bound, bound]`` to ``[0, 1]``, clamping points outside to the border.

    Args:
        x: ``[N, 3]`` positions.
        bound: half extent of the encoded cube.

    Returns:
        ``[N, 3]`` normalised positions in ``[0, 1]``.
    """
    return ((x + bound) * (0.5 / bound)).clamp(0.0, 1.0)


def vertex_index(ia: Tensor, ib: Tensor, resolution: int, table_size: int, hashed: bool) -> Tensor:
    """Table row of grid vertex ``(ia, ib)`` (int64 tensors of any shape) for one level."""
    if not hashed:
        return ia + ib * (resolution + 1)
    # Emulate uint32 multiply-xor in int64: products stay below 2^63 for any realistic resolution.
    mixed = (ia * HASH_PRIME_A) ^ ((ib * HASH_PRIME_B) & UINT32_MASK)
    return (mixed & UINT32_MASK) % table_size


def bilinear_lookup(uv: Tensor, table: Tensor, resolution: int, hashed: bool) -> Tensor:
    """Bilinearly interpolate one level's table at normalised plane coordinates.

    Args:
        uv: ``[N, 2]`` coordinates in ``[0, 1]``.
        table: ``[table_size, F]`` features of this level.
        resolution: cells per side ``R``.
        hashed: whether vertices are hashed into the table (else dense).

    Returns:
        ``[N, F]`` interpolated features.
    """
    pos = uv * resolution
    cell = pos.detach().floor().clamp(max=resolution - 1)
    frac = pos - cell  # differentiable w.r.t. uv; the cell index is piecewise constant
    cell = cell.long()
    features = torch.zeros(uv.shape[0], table.shape[1], dtype=table.dtype, device=table.device)
    for da, db in CELL_CORNERS:
        weight_a = frac[:, 0] if da else 1 - frac[:, 0]
        weight_b = frac[:, 1] if db else 1 - frac[:, 1]
        rows = vertex_index(cell[:, 0] + da, cell[:, 1] + db, resolution, table.shape[0], hashed)
        features = features + (weight_a * weight_b)[:, None] * table[rows]
    return features


def reference_encode(x: Tensor, embeddings: Tensor, layout: GridLayout, bound: float) -> Tensor:
    """Tri-plane multi-resolution hash encoding, plain PyTorch.

    Args:
        x: ``[N, 3]`` positions in ``[-bound, bound]`` (outside points are clamped).
        embeddings: ``[3, S, F]`` tables of the three planes; level ``l`` occupies rows
            ``layout.offsets[l] : layout.offsets[l] + layout.table_sizes[l]``.
        layout: per-level resolutions, table sizes, offsets and hashing flags.
        bound: half extent of the encoded cube.

    Returns:
        ``[N, 3 * L * F]`` features, plane-major: xy levels 0..L-1, then yz, then xz.
    """
    u = normalize_inputs(x, bound)
    per_level = []
    for plane, axes in enumerate(PLANE_AXES):
        uv = u[:, list(axes)]
        for resolution, size, offset, hashed in zip(
            layout.resolutions, layout.table_sizes, layout.offsets, layout.hashed, strict=True
        ):
            table = embeddings[plane, offset : offset + size]
            per_level.append(bilinear_lookup(uv, table, resolution, hashed))
    return torch.cat(per_level, dim=1)
