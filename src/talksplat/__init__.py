"""talksplat: audio-driven talking-head synthesis with 3D Gaussian Splatting, on a plain CPU."""

import os as _os
import sys as _sys

__version__ = "0.1.0"

if "torch" not in _sys.modules:
    # OpenMP threads that spin while idle (libgomp's default) cost 2-3x on a machine where anything
    # else is running: a spinning thread holds the core the working thread needs
    # (benchmarks/rasterizer.py, docs/engine.md). Sleeping idle threads are the robust default.
    # It must be set before torch loads libgomp; an explicit user setting wins.
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _keep_freed_memory() -> None:
    """Tells glibc's malloc to keep freed memory for reuse instead of handing it back to the kernel.

    Every rendered frame allocates and frees the same large tensors (tens of MB). With glibc's
    defaults each of them is a fresh mmap (or a trimmed heap top) that the kernel must zero and
    fault in again: on 2 cores 40% of a SyncTalk++ render's CPU time was system time. Fixed
    thresholds (mmap only above 32 MB, trim only beyond 1 GB free, 64 MB of top padding) took that
    render from 24-25 to 31-33 frames/s (docs/render.md). The cost: the process keeps its peak heap.
    ``TALKSPLAT_SYSTEM_MALLOC=1`` leaves malloc as it is.
    """
    if _os.environ.get("TALKSPLAT_SYSTEM_MALLOC") == "1" or not _sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):   # not glibc (e.g. musl): nothing to tune
        return
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    for option, value in ((_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 64 << 20)):
        mallopt(option, value)


# glibc's mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_keep_freed_memory()
