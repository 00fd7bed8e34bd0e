"""The fast CPU backend: ctypes bindings to ``csrc/rasterize.cpp`` wrapped in autograd Functions.

The kernel is split like gsplat's pipeline into projection, tile binning and rasterization, each a
plain C function; the two differentiable stages (projection, rasterization) are autograd Functions,
so 2D means are an ordinary intermediate tensor whose gradient densification can read.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from talksplat._native import NativeStatus, ptr, try_load

TILE_SIZE = 16
_SOURCES = (Path(__file__).parent / "csrc" / "rasterize.cpp",)
_I, _I64, _F, _P = ctypes.c_int, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p


@functools.cache
def _library() -> tuple[ctypes.CDLL | None, str]:
    lib, reason = try_load("talksplat_raster", _SOURCES)
    if lib is None:
        return None, reason
    lib.ts_project_forward.argtypes = [_I, _P, _P, _P, _P, _P, _P, _I, _I, _F, _F, _F, _P, _P, _P, _P, _P, _I]
    lib.ts_project_backward.argtypes = [_I, _P, _P, _P, _P, _P, _I, _I, _F, _P, _P, _P, _P, _P, _P, _P, _I]
    lib.ts_count_tiles.argtypes = [_I, _P, _P, _I, _I, _P, _I]
    lib.ts_count_tiles.restype = _I64
    lib.ts_bin_tiles.argtypes = [_I, _P, _P, _P, _P, _I, _I, _P, _P, _P, _P, _I]
    lib.ts_rasterize_forward.argtypes = [_I, _I, _P, _P, _P, _P, _P, _I, _I, _P, _P, _P, _P, _P, _I]
    lib.ts_rasterize_backward.argtypes = [_I, _I, _P, _P, _P, _P, _P, _I, _I, _P, _P, _P, _P, _P, _P,
                                          _P, _P, _P, _P, _P, _P, _P, _I]
    return lib, "ok"


def lib() -> ctypes.CDLL:
    library, reason = _library()
    if library is None:
        raise RuntimeError(f"the fast CPU rasterizer is unavailable: {reason}")
    return library


def status() -> NativeStatus:
    library, reason = _library()
    detail = "C++ tile rasterizer (OpenMP, 16x16 tiles)" if library else reason
    return NativeStatus("rasterizer (cpu)", library is not None, detail)


def _threads() -> int:
    return torch.get_num_threads()


def _f32(t: Tensor) -> Tensor:
    return t.detach().to(torch.float32).contiguous()


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, quats, scales, opacities, viewmat, K, width, height, near, far, eps2d):
        n = means.shape[0]
        # Keep every converted tensor in a local: a temporary passed as ptr(_f32(x)) would be freed
        # before the kernel reads it.
        means_c, quats_c, scales_c, opac_c = _f32(means), _f32(quats), _f32(scales), _f32(opacities)
        viewmat_c, K_c = _f32(viewmat), _f32(K)
        means2d = torch.empty(n, 2)
        conics = torch.empty(n, 3)
        depths = torch.empty(n)
        ext = torch.empty(n, 2)
        radii = torch.empty(n, 2, dtype=torch.int32)
        lib().ts_project_forward(n, ptr(means_c), ptr(quats_c), ptr(scales_c), ptr(opac_c),
                                 ptr(viewmat_c), ptr(K_c), width, height, near, far, eps2d,
                                 ptr(means2d), ptr(conics), ptr(depths), ptr(ext), ptr(radii), _threads())
        ctx.save_for_backward(means_c, quats_c, scales_c, viewmat_c, K_c, ext)
        ctx.size = (width, height, eps2d)
        ctx.mark_non_differentiable(ext, radii)
        return means2d, conics, depths, ext, radii

    @staticmethod
    def backward(ctx, v_means2d, v_conics, v_depths, _v_ext, _v_radii):
        means, quats, scales, viewmat, K, ext = ctx.saved_tensors
        width, height, eps2d = ctx.size
        n = means.shape[0]
        v_means, v_quats, v_scales = torch.empty(n, 3), torch.empty(n, 4), torch.empty(n, 3)
        v_means2d, v_conics, v_depths = _f32(v_means2d), _f32(v_conics), _f32(v_depths)
        lib().ts_project_backward(n, ptr(means), ptr(quats), ptr(scales), ptr(viewmat), ptr(K), width,
                                  height, eps2d, ptr(ext), ptr(v_means2d), ptr(v_conics), ptr(v_depths), ptr(v_means), ptr(v_quats), ptr(v_scales), _threads())
        return v_means, v_quats, v_scales, None, None, None, None, None, None, None, None


def project(means, quats, scales, opacities, viewmat, K, width, height, near, far, eps2d):
    """Projects Gaussians (see ``rasterize``). Returns means2d[N,2], conics[N,3], depths[N],
    ext[N,2] (half-extents in pixels of the alpha >= 1/255 ellipse, 0 when culled), radii[N,2] int."""
    return _Project.apply(means, quats, scales, opacities, viewmat, K, width, height,
                          float(near), float(far), float(eps2d))


@dataclass
class TileBins:
    """(tile, Gaussian) pairs sorted by tile then depth, plus what the backward reduction needs."""

    tile_offsets: Tensor  # [n_tiles + 1] int32
    ids: Tensor           # [n_isects] int32: Gaussian id of each pair
    perm: Tensor          # [n_isects] int32: position in ids of each Gaussian-major pair
    goff: Tensor          # [N] int64: first Gaussian-major pair of each Gaussian
    counts: Tensor        # [N] int32: tiles touched by each Gaussian

    @property
    def n_isects(self) -> int:
        return int(self.ids.shape[0])


def bin_tiles(means2d: Tensor, ext: Tensor, depths: Tensor, width: int, height: int) -> TileBins:
    n = means2d.shape[0]
    m2, e, d = _f32(means2d), _f32(ext), _f32(depths)
    counts = torch.empty(n, dtype=torch.int32)
    total = lib().ts_count_tiles(n, ptr(m2), ptr(e), width, height, ptr(counts), _threads())
    n_tiles = -(-width // TILE_SIZE) * -(-height // TILE_SIZE)
    bins = TileBins(
        tile_offsets=torch.empty(n_tiles + 1, dtype=torch.int32),
        ids=torch.empty(total, dtype=torch.int32),
        perm=torch.empty(total, dtype=torch.int32),
        goff=torch.empty(n, dtype=torch.int64),
        counts=counts,
    )
    lib().ts_bin_tiles(n, ptr(m2), ptr(e), ptr(d), ptr(counts), width, height, ptr(bins.tile_offsets),
                       ptr(bins.ids), ptr(bins.perm), ptr(bins.goff), _threads())
    return bins


class _Rasterize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, features, ext, bins: TileBins, width, height):
        n, channels = features.shape
        m2, con, op, feats, e = (_f32(t) for t in (means2d, conics, opacities, features, ext))
        acc = torch.empty(height, width, channels)
        T_final = torch.empty(height, width)
        last = torch.empty(height, width, dtype=torch.int32)
        lib().ts_rasterize_forward(n, channels, ptr(m2), ptr(con), ptr(op), ptr(feats), ptr(e), width, height,
                                   ptr(bins.tile_offsets), ptr(bins.ids), ptr(acc), ptr(T_final), ptr(last),
                                   _threads())
        ctx.save_for_backward(m2, con, op, feats, e, T_final, last)
        ctx.bins, ctx.size = bins, (width, height)
        return acc, T_final

    @staticmethod
    def backward(ctx, v_acc, v_T):
        m2, con, op, feats, e, T_final, last = ctx.saved_tensors
        bins, (width, height) = ctx.bins, ctx.size
        n, channels = feats.shape
        v_means2d, v_conics = torch.empty(n, 2), torch.empty(n, 3)
        v_opac, v_feats = torch.empty(n), torch.empty(n, channels)
        v_acc = torch.zeros(height, width, channels) if v_acc is None else _f32(v_acc)
        v_T = torch.zeros(height, width) if v_T is None else _f32(v_T)
        lib().ts_rasterize_backward(n, channels, ptr(m2), ptr(con), ptr(op), ptr(feats), ptr(e), width, height,
                                    ptr(bins.tile_offsets), ptr(bins.ids), ptr(bins.perm), ptr(bins.goff),
                                    ptr(bins.counts), ptr(T_final), ptr(last), ptr(v_acc), ptr(v_T),
                                    ptr(v_means2d), ptr(v_conics), ptr(v_opac), ptr(v_feats), _threads())
        return v_means2d, v_conics, v_opac, v_feats, None, None, None, None


def rasterize_features(means2d, conics, opacities, features, ext, bins, width, height):
    """Front-to-back compositing. Returns acc[H,W,C] (premultiplied sum) and T_final[H,W]."""
    return _Rasterize.apply(means2d, conics, opacities, features, ext, bins, width, height)
