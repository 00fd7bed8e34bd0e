"""Gaussian primitives and their rasterization (CPU C++ kernel, PyTorch reference, optional gsplat)."""

from talksplat._native import NativeStatus
from talksplat.gaussians.rasterize import RenderResult, rasterize, resolve_backend

__all__ = ["RenderResult", "backend_status", "rasterize", "resolve_backend"]


def backend_status() -> list[NativeStatus]:
    """What each rasterizer backend can do on this machine, and why not."""
    from talksplat.gaussians import _cpu
    from talksplat.gaussians._gsplat import status as gsplat_status

    return [_cpu.status(), NativeStatus("rasterizer (reference)", True, "pure PyTorch, slow"), gsplat_status()]
