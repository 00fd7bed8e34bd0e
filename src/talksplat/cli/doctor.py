"""``talksplat doctor``: report which backends and kernels work on this machine, and why not."""

from __future__ import annotations

import platform

from talksplat import __version__
from talksplat._native import cache_dir, find_compiler


def register(subparsers) -> None:
    parser = subparsers.add_parser("doctor", help="show available backends/kernels and why others are not")
    parser.add_argument("--build", action="store_true",
                        help="build the C++ kernels now (otherwise they build on first use)")
    parser.set_defaults(func=run)


def _statuses():
    from talksplat.fields import backend_status as field_status
    from talksplat.gaussians import backend_status as raster_status

    return [*raster_status(), *field_status()]


def run(args) -> int:
    import torch  # here, not at the top: every command builds this parser, few need torch

    print(f"talksplat {__version__} | Python {platform.python_version()} | torch {torch.__version__} "
          f"| {torch.get_num_threads()} threads")
    print(f"C++ compiler: {find_compiler() or 'not found'} | kernel cache: {cache_dir()}")
    ok = True
    for status in _statuses():
        mark = "yes" if status.available else "no "
        print(f"  [{mark}] {status.name:<24} {status.detail}")
        if args.build and status.name.endswith("(cpu)") and not status.available:
            ok = False
    return 0 if ok else 1
