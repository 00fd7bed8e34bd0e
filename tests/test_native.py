"""The kernel build/load machinery."""

from __future__ import annotations

import numpy as np
import pytest

from talksplat import _native
from talksplat.fields import hashgrid
from talksplat.gaussians import _cpu


@pytest.mark.skipif(not _cpu.status().available, reason="C++ kernels unavailable")
def test_loading_kernels_keeps_subnormal_floats():
    # A library linked with -ffast-math would switch the process to flush-to-zero on load.
    _cpu.lib()
    assert hashgrid.kernel_available()
    tiny = np.float32(1e-39)  # below float32's smallest normal (1.2e-38)
    assert tiny * np.float32(1.0) > 0


def test_disabled_native_build_raises_a_clear_reason(monkeypatch, tmp_path):
    monkeypatch.setenv("TALKSPLAT_NO_NATIVE", "1")
    with pytest.raises(_native.NativeUnavailable, match="TALKSPLAT_NO_NATIVE"):
        _native.build_library("anything", [tmp_path / "x.cpp"])


def test_build_failure_is_reported_in_one_line(monkeypatch, tmp_path):
    monkeypatch.delenv("TALKSPLAT_NO_NATIVE", raising=False)
    monkeypatch.setenv("TALKSPLAT_CACHE_DIR", str(tmp_path / "cache"))
    broken = tmp_path / "broken.cpp"
    broken.write_text("this is not C++\n")
    if _native.find_compiler() is None:
        pytest.skip("no C++ compiler")
    with pytest.raises(_native.NativeUnavailable, match="building broken failed"):
        _native.build_library("broken", [broken])
    assert not list((tmp_path / "cache").rglob("*.so"))  # nothing half-built left behind


def test_builds_are_cached_by_content(monkeypatch, tmp_path):
    if _native.find_compiler() is None:
        pytest.skip("no C++ compiler")
    monkeypatch.delenv("TALKSPLAT_NO_NATIVE", raising=False)
    monkeypatch.setenv("TALKSPLAT_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "ok.cpp"
    src.write_text('extern "C" int answer() { return 42; }\n')
    first = _native.build_library("ok", [src])
    assert _native.build_library("ok", [src]) == first
    src.write_text('extern "C" int answer() { return 43; }\n')
    assert _native.build_library("ok", [src]) != first
