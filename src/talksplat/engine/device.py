"""Which device training and rendering run on: ``--device auto|cpu|cuda``.

``cpu`` is the project's home (every test runs there). ``cuda`` moves a recipe's parameters and its
subject's tensors to the GPU; the rasterizer then uses gsplat's CUDA kernels (``pip install
talksplat[cuda]``) and the hash grid its plain-PyTorch path. A recipe says which devices it supports
(``Recipe.devices``); ``auto`` picks ``cuda`` only when PyTorch sees a GPU, gsplat imports and the
recipe supports it, else ``cpu``. Asking for ``cuda`` where it cannot run is a one-line usage error.
"""

from __future__ import annotations

import torch

from talksplat.core.constants import DEVICE_CHOICES
from talksplat.errors import UsageError


def cuda_status() -> tuple[bool, str]:
    """(usable, why not): a CUDA device visible to PyTorch and gsplat importable."""
    if not torch.cuda.is_available():
        return False, ("PyTorch sees no CUDA device (this torch build is CPU-only, or no GPU/driver is "
                       "visible)")
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False, "gsplat is not installed (`pip install talksplat[cuda]`)"
    return True, ""


def resolve_device(requested: str, supported: tuple[str, ...] = ("cpu",), who: str = "this recipe") -> torch.device:
    """The device for ``--device requested`` given the devices ``who`` supports."""
    if requested not in DEVICE_CHOICES:
        raise UsageError(f"--device must be one of {', '.join(DEVICE_CHOICES)} (got {requested!r})")
    if requested == "cpu":
        return torch.device("cpu")
    usable, why = cuda_status()
    if requested == "auto":
        return torch.device("cuda") if usable and "cuda" in supported else torch.device("cpu")
    if "cuda" not in supported:
        raise UsageError(f"--device cuda: {who} runs on the CPU only so far; use --device cpu (or auto)")
    if not usable:
        raise UsageError(f"--device cuda: {why}; use --device cpu (or auto)")
    return torch.device("cuda")
