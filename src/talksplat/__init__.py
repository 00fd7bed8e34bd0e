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
