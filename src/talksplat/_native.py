"""Build-on-first-use loader for talksplat's C++ kernels.

The kernels are plain C-ABI shared libraries (no torch headers), compiled with the system C++
compiler the first time they are needed and cached under a key that covers the source text, the
compiler flags, the compiler version and the CPU's feature flags. A plain C library builds in about
two seconds; a ``torch.utils.cpp_extension`` build of the same code took ~46 s.

Cache location: ``$TALKSPLAT_CACHE_DIR`` or ``~/.cache/talksplat``. Set ``TALKSPLAT_NO_NATIVE=1``
to force the pure-PyTorch reference backends.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

# -ffast-math lets GCC vectorise the pixel loops (the alpha clamp and exp need finite-math to
# become SIMD). It is given only when compiling, never when linking: a shared library *linked* with
# -ffast-math pulls in crtfastmath.o, which switches the whole process to flush-subnormals-to-zero
# when loaded and silently changes numpy's and torch's results (tests/test_native.py checks this).
# -march=native was 1.45x faster than a generic x86-64-v3 build in trials, and is safe because the
# cache key includes the CPU's flags. On CPUs with AVX-512, GCC still prefers 256-bit vectors
# unless told otherwise; 512-bit made the rasterizer 1.4-1.5x faster here. No-op elsewhere.
COMPILE_FLAGS = ("-O3", "-ffast-math", "-fopenmp", "-fPIC", "-std=c++17")
LINK_FLAGS = ("-shared", "-fopenmp")
NATIVE_ARCH_FLAGS = ("-march=native", "-mprefer-vector-width=512")


class NativeUnavailable(RuntimeError):
    """A kernel library could not be built or loaded; callers fall back to the reference."""


@dataclass(frozen=True)
class NativeStatus:
    name: str
    available: bool
    detail: str


def cache_dir() -> Path:
    root = os.environ.get("TALKSPLAT_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "talksplat"


def native_disabled() -> bool:
    return os.environ.get("TALKSPLAT_NO_NATIVE", "") not in ("", "0")


def find_compiler() -> str | None:
    for candidate in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


@functools.cache
def _compiler_version(cxx: str) -> str:
    out = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else cxx


@functools.cache
def _cpu_signature() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _arch_flags(cxx: str) -> tuple[str, ...]:
    probe = subprocess.run(
        [cxx, *NATIVE_ARCH_FLAGS, "-x", "c++", "-E", "-", "-o", os.devnull],
        input="", capture_output=True, text=True, check=False,
    )
    return NATIVE_ARCH_FLAGS if probe.returncode == 0 else ()


def _build_key(sources: list[Path], flags: tuple[str, ...], cxx: str) -> str:
    digest = hashlib.sha256()
    for src in sources:
        digest.update(src.name.encode())
        digest.update(src.read_bytes())
    digest.update(" ".join(flags).encode())
    digest.update(_compiler_version(cxx).encode())
    digest.update(_cpu_signature().encode())
    return digest.hexdigest()[:16]


def build_library(name: str, sources: list[Path]) -> Path:
    """Compile ``sources`` into ``lib<name>.so`` in the cache (or reuse a cached build).

    Raises NativeUnavailable with a one-line reason when no compiler exists or the build fails.
    """
    if native_disabled():
        raise NativeUnavailable("disabled by TALKSPLAT_NO_NATIVE")
    cxx = find_compiler()
    if cxx is None:
        raise NativeUnavailable("no C++ compiler found (install g++, e.g. `apt install g++`)")
    flags = COMPILE_FLAGS + _arch_flags(cxx)
    key = _build_key(sources, flags + LINK_FLAGS, cxx)
    target = cache_dir() / "kernels" / f"{name}-{key}" / f"lib{name}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build in a temp folder and rename: a concurrent or killed build never leaves a broken .so.
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp_dir:
        objects = [Path(tmp_dir) / f"{i}.o" for i in range(len(sources))]
        for src, obj in zip(sources, objects):
            _run_compiler([cxx, *flags, "-c", str(src), "-o", str(obj)], name)
        tmp = Path(tmp_dir) / target.name
        _run_compiler([cxx, *map(str, objects), *LINK_FLAGS, "-o", str(tmp)], name)
        os.replace(tmp, target)
    return target


def _run_compiler(cmd: list[str], name: str) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        first_error = next((ln for ln in result.stderr.splitlines() if "error" in ln), result.stderr[:200])
        raise NativeUnavailable(f"building {name} failed: {first_error.strip()}")


@functools.cache
def load_library(name: str, sources: tuple[Path, ...]) -> ctypes.CDLL:
    """Build (if needed) and dlopen a kernel library. Cached per process."""
    import torch  # noqa: F401  - load torch's libgomp first so the kernels share its thread pool

    path = build_library(name, list(sources))
    try:
        return ctypes.CDLL(str(path))
    except OSError as exc:
        raise NativeUnavailable(f"loading {path} failed: {exc}") from exc


def try_load(name: str, sources: tuple[Path, ...]) -> tuple[ctypes.CDLL | None, str]:
    """Like load_library, but returns (None, reason) instead of raising, warning once."""
    try:
        return load_library(name, sources), "ok"
    except NativeUnavailable as exc:
        if not native_disabled():
            warnings.warn(f"talksplat: fast CPU kernel '{name}' unavailable ({exc}); "
                          "using the slower pure-PyTorch reference", RuntimeWarning, stacklevel=3)
        return None, str(exc)


def ptr(tensor) -> ctypes.c_void_p:
    """Raw data pointer of a contiguous CPU tensor, for passing to a kernel."""
    return ctypes.c_void_p(tensor.data_ptr())
