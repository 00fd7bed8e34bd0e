"""Tri-plane multi-resolution hash encoding (the ER-NeRF / TalkingGaussian position encoder).

A 3D point is projected onto the xy, yz and xz planes; each plane is an instant-ngp style stack of
``L`` 2D grids whose vertex features are bilinearly interpolated and concatenated.

Resolutions: ``finest = desired_resolution`` (default ``256 * bound``), per-level growth
``b = exp(ln(finest / base) / (L - 1))`` (``b = 1`` when ``L == 1``) and
``R_l = floor(base * b**l + RESOLUTION_ROUNDING_SLACK)`` cells per side; the slack only keeps
floating-point error from turning ``256.0`` into ``255``. Level ``l`` has ``(R_l + 1)^2`` vertices;
its table has ``min(T, (R_l + 1)^2)`` rows with ``T = 2**log2_hashmap_size``: dense indexing when all
vertices fit, the instant-ngp spatial hash otherwise. Unlike instant-ngp, table sizes are not padded
to a multiple of 8. See ``_hashgrid_reference.py`` for the exact interpolation conventions.

Inputs outside ``[-bound, bound]`` are clamped to the border (zero gradient for the clamped
coordinates). Output channels are plane-major: xy levels ``0..L-1``, then yz, then xz, each level's
``F`` features contiguous. The kernel's gradients do not depend on the thread count (each table is
accumulated by one thread, in point order).

Backends: ``"cpu"`` is a C++/OpenMP kernel (float32, CPU tensors) built on first use; ``"reference"``
is plain PyTorch (any dtype/device); ``"auto"`` uses the kernel when it is available and the inputs
are float32 on the CPU, else the reference.
"""

from __future__ import annotations

import ctypes
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from talksplat._native import NativeStatus, ptr, try_load

# GridLayout is defined beside the reference (which consumes it) so that the reference needs nothing
# from this module; it stays importable from here and from talksplat.fields.
from talksplat.fields._hashgrid_reference import PLANE_AXES, GridLayout, reference_encode

Backend = Literal["auto", "cpu", "reference"]
BACKENDS = ("auto", "cpu", "reference")

NUM_PLANES = len(PLANE_AXES)
# instant-ngp initialises tables near zero so that early training is driven by the MLP.
EMBEDDING_INIT_RANGE = 1e-4
# Finest resolution per unit of bound when desired_resolution is not given.
DEFAULT_FINEST_PER_BOUND = 256
# floor(base * b**l) must not lose a whole cell to rounding (e.g. 16 * 16**(11/11) = 255.99999...).
RESOLUTION_ROUNDING_SLACK = 1e-6
# The kernel indexes a level table (rows x features) with int32.
MAX_TABLE_ELEMENTS = 2**31 - 1

KERNEL_NAME = "hashgrid"
KERNEL_SOURCES = (Path(__file__).parent / "csrc" / "hashgrid.cpp",)
KERNEL_OK = 0


@dataclass(frozen=True)
class HashGridConfig:
    """Hyper-parameters of the tri-plane hash encoding.

    Attributes:
        num_levels: levels ``L`` per plane.
        features_per_level: features ``F`` per vertex.
        log2_hashmap_size: ``log2(T)``, the maximum rows per level table.
        base_resolution: cells per side of the coarsest level.
        desired_resolution: cells per side of the finest level; ``None`` means ``256 * bound``.
        bound: inputs are expected in ``[-bound, bound]^3``.
    """

    num_levels: int = 12
    features_per_level: int = 1
    log2_hashmap_size: int = 17
    base_resolution: int = 16
    desired_resolution: float | None = None
    bound: float = 1.0

    def __post_init__(self) -> None:
        if self.num_levels < 1 or self.features_per_level < 1:
            raise ValueError("num_levels and features_per_level must be >= 1")
        if self.log2_hashmap_size < 1:
            raise ValueError("log2_hashmap_size must be >= 1")
        if 2**self.log2_hashmap_size * self.features_per_level > MAX_TABLE_ELEMENTS:
            raise ValueError("2**log2_hashmap_size * features_per_level must be < 2**31")
        if self.base_resolution < 1 or self.bound <= 0:
            raise ValueError("base_resolution must be >= 1 and bound > 0")
        if self.finest_resolution < self.base_resolution:
            raise ValueError("desired_resolution must be >= base_resolution")

    @property
    def finest_resolution(self) -> float:
        if self.desired_resolution is None:
            return DEFAULT_FINEST_PER_BOUND * self.bound
        return float(self.desired_resolution)

    @property
    def output_dim(self) -> int:
        return NUM_PLANES * self.num_levels * self.features_per_level


def level_scale(config: HashGridConfig) -> float:
    """Per-level resolution growth factor ``b``."""
    if config.num_levels == 1:
        return 1.0
    return math.exp(math.log(config.finest_resolution / config.base_resolution) / (config.num_levels - 1))


@functools.cache
def grid_layout(config: HashGridConfig) -> GridLayout:
    """Resolutions, table sizes and row offsets of every level (see the module docstring)."""
    scale = level_scale(config)
    max_rows = 2**config.log2_hashmap_size
    resolutions, sizes, offsets, hashed = [], [], [], []
    offset = 0
    for level in range(config.num_levels):
        resolution = math.floor(config.base_resolution * scale**level + RESOLUTION_ROUNDING_SLACK)
        vertices = (resolution + 1) ** 2
        resolutions.append(resolution)
        sizes.append(min(max_rows, vertices))
        offsets.append(offset)
        hashed.append(vertices > max_rows)
        offset += sizes[-1]
    return GridLayout(tuple(resolutions), tuple(sizes), tuple(offsets), tuple(hashed), offset)


def embedding_shape(config: HashGridConfig) -> tuple[int, int, int]:
    """Shape ``[3, S, F]`` of the embeddings tensor."""
    return (NUM_PLANES, grid_layout(config).entries_per_plane, config.features_per_level)


def init_embeddings(config: HashGridConfig, dtype: torch.dtype = torch.float32,
                    generator: torch.Generator | None = None) -> Tensor:
    """Fresh ``[3, S, F]`` embeddings, uniform in ``[-1e-4, 1e-4]`` like instant-ngp."""
    table = torch.empty(embedding_shape(config), dtype=dtype)
    return table.uniform_(-EMBEDDING_INIT_RANGE, EMBEDDING_INIT_RANGE, generator=generator)


# --------------------------------------------------------------------------------------------------
# C++ kernel binding
# --------------------------------------------------------------------------------------------------


class _NativeLayout(ctypes.Structure):
    """Mirror of ``HashGridLayout`` in csrc/hashgrid.cpp (same field order)."""

    _fields_ = [
        ("num_levels", ctypes.c_int32),
        ("features", ctypes.c_int32),
        ("entries_per_plane", ctypes.c_int64),
        ("bound", ctypes.c_float),
        ("resolutions", ctypes.c_void_p),
        ("offsets", ctypes.c_void_p),
        ("table_sizes", ctypes.c_void_p),
        ("hashed", ctypes.c_void_p),
    ]


@dataclass(frozen=True)
class _KernelLayout:
    """A _NativeLayout plus the tensors its pointers refer to (kept alive together)."""

    struct: _NativeLayout
    arrays: tuple[Tensor, ...]


@functools.cache
def _kernel_layout(config: HashGridConfig) -> _KernelLayout:
    layout = grid_layout(config)
    resolutions = torch.tensor(layout.resolutions, dtype=torch.int32)
    offsets = torch.tensor(layout.offsets, dtype=torch.int64)
    sizes = torch.tensor(layout.table_sizes, dtype=torch.int32)
    hashed = torch.tensor(layout.hashed, dtype=torch.int32)
    struct = _NativeLayout(config.num_levels, config.features_per_level, layout.entries_per_plane,
                           config.bound, ptr(resolutions).value, ptr(offsets).value,
                           ptr(sizes).value, ptr(hashed).value)
    return _KernelLayout(struct, (resolutions, offsets, sizes, hashed))


@functools.cache
def _load_kernel() -> tuple[ctypes.CDLL | None, str]:
    """Build/load the kernel once per process (so a missing compiler warns only once)."""
    lib, reason = try_load(KERNEL_NAME, KERNEL_SOURCES)
    if lib is None:
        return None, reason
    layout_p, float_p, i64, i32 = ctypes.POINTER(_NativeLayout), ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32
    signatures = {
        "hashgrid_forward": [float_p, i64, float_p, layout_p, float_p, i32],
        "hashgrid_backward_embeddings": [float_p, i64, float_p, layout_p, float_p, i32],
        "hashgrid_backward_inputs": [float_p, i64, float_p, float_p, layout_p, float_p, i32],
    }
    for name, argtypes in signatures.items():
        function = getattr(lib, name)
        function.argtypes = argtypes
        function.restype = ctypes.c_int
    return lib, reason


def kernel_available() -> bool:
    return _load_kernel()[0] is not None


def _call(function, *args) -> None:
    status = function(*args)
    if status != KERNEL_OK:
        raise RuntimeError(f"{function.__name__} failed with status {status}")


def _native_forward(x: Tensor, embeddings: Tensor, config: HashGridConfig) -> Tensor:
    lib, _ = _load_kernel()
    out = torch.empty(x.shape[0], config.output_dim, dtype=torch.float32)
    layout = _kernel_layout(config)
    _call(lib.hashgrid_forward, ptr(x), x.shape[0], ptr(embeddings), ctypes.byref(layout.struct),
          ptr(out), torch.get_num_threads())
    return out


def _native_grad_embeddings(x: Tensor, grad_out: Tensor, config: HashGridConfig) -> Tensor:
    lib, _ = _load_kernel()
    grad = torch.empty(embedding_shape(config), dtype=torch.float32)  # the kernel zeroes it
    layout = _kernel_layout(config)
    _call(lib.hashgrid_backward_embeddings, ptr(x), x.shape[0], ptr(grad_out),
          ctypes.byref(layout.struct), ptr(grad), torch.get_num_threads())
    return grad


def _native_grad_inputs(x: Tensor, embeddings: Tensor, grad_out: Tensor, config: HashGridConfig) -> Tensor:
    lib, _ = _load_kernel()
    grad = torch.empty_like(x)
    layout = _kernel_layout(config)
    _call(lib.hashgrid_backward_inputs, ptr(x), x.shape[0], ptr(embeddings), ptr(grad_out),
          ctypes.byref(layout.struct), ptr(grad), torch.get_num_threads())
    return grad


class _TriPlaneHashFunction(torch.autograd.Function):
    """Autograd wrapper of the C++ kernel (first-order gradients only)."""

    @staticmethod
    def forward(ctx, x: Tensor, embeddings: Tensor, config: HashGridConfig) -> Tensor:
        ctx.config = config
        ctx.save_for_backward(x, embeddings)
        return _native_forward(x, embeddings, config)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        x, embeddings = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        need_x, need_embeddings, _ = ctx.needs_input_grad
        grad_x = _native_grad_inputs(x, embeddings, grad_out, ctx.config) if need_x else None
        grad_embeddings = _native_grad_embeddings(x, grad_out, ctx.config) if need_embeddings else None
        return grad_x, grad_embeddings, None


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def _kernel_accepts(x: Tensor, embeddings: Tensor) -> bool:
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in (x, embeddings))


def _resolve_backend(backend: str, x: Tensor, embeddings: Tensor) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "reference":
        return "reference"
    if backend == "auto":
        return "cpu" if _kernel_accepts(x, embeddings) and kernel_available() else "reference"
    if not _kernel_accepts(x, embeddings):
        raise ValueError("backend='cpu' needs float32 CPU tensors; use backend='reference' otherwise")
    if not kernel_available():
        raise RuntimeError(f"backend='cpu' unavailable: {_load_kernel()[1]}")
    return "cpu"


def _check_shapes(x: Tensor, embeddings: Tensor, config: HashGridConfig) -> None:
    if x.shape[-1] != 3:
        raise ValueError(f"x must have shape [..., 3], got {tuple(x.shape)}")
    expected = embedding_shape(config)
    if tuple(embeddings.shape) != expected:
        raise ValueError(f"embeddings must have shape {list(expected)} for this config, "
                         f"got {list(embeddings.shape)}")


def triplane_hash_encode(
    x: Tensor,
    embeddings: Tensor,
    config: HashGridConfig,
    backend: Backend = "auto",
    input_gradients: bool = True,
) -> Tensor:
    """Encode 3D points with three multi-resolution hash-grid planes.

    Args:
        x: ``[..., 3]`` positions in ``[-bound, bound]``; points outside are clamped to the border
            (zero gradient for the clamped coordinates).
        embeddings: ``[3, S, F]`` plane tables, ``S = grid_layout(config).entries_per_plane``.
        config: grid hyper-parameters.
        backend: ``"auto"`` (C++ kernel when available and the tensors are float32 CPU, else the
            reference), ``"cpu"`` (C++ kernel, error if unavailable) or ``"reference"``.
        input_gradients: if False, ``x`` is treated as a constant even when it requires grad, which
            skips the input-gradient pass. (When ``x`` does not require grad it is skipped anyway.)

    Returns:
        ``[..., 3 * L * F]`` features, plane-major: xy levels ``0..L-1``, then yz, then xz; within a
        level the ``F`` features are contiguous. Differentiable w.r.t. ``embeddings`` and ``x``.
    """
    _check_shapes(x, embeddings, config)
    batch_shape = x.shape[:-1]
    points = x.reshape(-1, 3)
    if not input_gradients:
        points = points.detach()
    if _resolve_backend(backend, points, embeddings) == "cpu":
        encoded = _TriPlaneHashFunction.apply(points.contiguous(), embeddings.contiguous(), config)
    else:
        encoded = reference_encode(points, embeddings, grid_layout(config), config.bound)
    return encoded.reshape(*batch_shape, config.output_dim)


class TriPlaneHashEncoding(nn.Module):
    """``nn.Module`` holding the ``[3, S, F]`` tri-plane tables; ``forward(x[..., 3]) -> [..., 3*L*F]``."""

    def __init__(self, config: HashGridConfig | None = None, backend: Backend = "auto") -> None:
        super().__init__()
        self.config = config or HashGridConfig()
        self.backend = backend
        self.embeddings = nn.Parameter(init_embeddings(self.config))

    @property
    def output_dim(self) -> int:
        return self.config.output_dim

    def forward(self, x: Tensor, input_gradients: bool = True) -> Tensor:
        return triplane_hash_encode(x, self.embeddings, self.config, self.backend, input_gradients)

    def extra_repr(self) -> str:
        layout = grid_layout(self.config)
        return (f"{self.config}, resolutions={list(layout.resolutions)}, "
                f"hashed_levels={sum(layout.hashed)}, backend={self.backend!r}")


def backend_status() -> list[NativeStatus]:
    """Availability of the encoding backends, for ``talksplat doctor``."""
    lib, reason = _load_kernel()
    return [
        NativeStatus("hashgrid (cpu)", lib is not None, "C++/OpenMP kernel" if lib is not None else reason),
        NativeStatus("hashgrid (reference)", True, "pure PyTorch (any dtype/device)"),
    ]
