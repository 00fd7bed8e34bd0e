"""Canonical Gaussians as a standard 3D Gaussian Splatting PLY (the layout of the 3DGS reference code,
which common splat viewers open): binary little-endian float32 vertices with ``x y z``, ``nx ny nz``
(zero), ``f_dc_0..2`` (degree-0 spherical-harmonic colour), ``opacity`` (logit), ``scale_0..2`` (log)
and ``rot_0..3`` (unit quaternion, w first)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from talksplat.errors import TalksplatError
from talksplat.io.atomic import write_bytes_atomic

SH_C0 = 0.28209479177387814          # degree-0 SH basis; viewers show 0.5 + SH_C0 * f_dc
OPACITY_EPS = 1e-6                   # keeps the logit finite for opacities of exactly 0 or 1
PROPERTIES = ("x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
              "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")
RGB = 3


def gaussians_to_rows(gaussians: dict) -> np.ndarray:
    """Activated Gaussians (``means``, ``quats`` wxyz, ``scales``, ``opacities``, RGB ``colors``) -> (N, 17)."""
    means = _array(gaussians["means"]).reshape(-1, 3)
    n = means.shape[0]
    colors = _array(gaussians["colors"]).reshape(n, -1)
    if colors.shape[1] != RGB:
        raise TalksplatError(f"these Gaussians carry {colors.shape[1]}-channel features, not RGB colours; "
                             "a 3DGS PLY stores RGB only")
    quats = _array(gaussians["quats"]).reshape(n, 4)
    quats = quats / np.maximum(np.linalg.norm(quats, axis=1, keepdims=True), 1e-12)
    scales = np.log(np.maximum(_array(gaussians["scales"]).reshape(n, 3), 1e-12))
    opacity = np.clip(_array(gaussians["opacities"]).reshape(n), OPACITY_EPS, 1 - OPACITY_EPS)
    logits = np.log(opacity / (1 - opacity))
    f_dc = (colors - 0.5) / SH_C0
    rows = np.concatenate([means, np.zeros((n, 3)), f_dc, logits[:, None], scales, quats], axis=1)
    if not np.all(np.isfinite(rows)):
        raise TalksplatError("the Gaussians contain NaN/inf values; the checkpoint is damaged")
    return rows.astype("<f4")


def _array(value) -> np.ndarray:
    return value.detach().cpu().numpy().astype(np.float64) if hasattr(value, "detach") else np.asarray(value, np.float64)


def write_ply(path: Path, gaussians: dict) -> int:
    """Writes ``gaussians`` (see :func:`gaussians_to_rows`) to ``path`` atomically; returns the count."""
    rows = gaussians_to_rows(gaussians)
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {rows.shape[0]}"]
    header += [f"property float {name}" for name in PROPERTIES] + ["end_header"]
    write_bytes_atomic(path, ("\n".join(header) + "\n").encode("ascii") + rows.tobytes())
    return int(rows.shape[0])


def read_ply(path: Path) -> dict[str, np.ndarray]:
    """Reads a binary little-endian PLY of float32 vertex properties: {property: (N,) array}."""
    data = Path(path).read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise TalksplatError(f"{path} is not a PLY file")
    lines = data[:end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in lines:
        raise TalksplatError(f"{path} is not a binary little-endian PLY")
    count = next(int(line.split()[2]) for line in lines if line.startswith("element vertex"))
    names = [line.split()[2] for line in lines if line.startswith("property float")]
    body = np.frombuffer(data, dtype="<f4", offset=end + len(b"end_header\n"), count=count * len(names))
    table = body.reshape(count, len(names))
    return {name: table[:, k] for k, name in enumerate(names)}
