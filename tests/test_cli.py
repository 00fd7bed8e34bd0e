"""The console script: version, doctor, the demo, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from talksplat import __version__
from talksplat.cli.main import main


def _talksplat(*args, **kw):
    return subprocess.run([sys.executable, "-m", "talksplat.cli.main", *args], capture_output=True, text=True,
                          check=False, **kw)


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"talksplat {__version__}"


def test_doctor_lists_backends(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for name in ("rasterizer (cpu)", "rasterizer (reference)", "rasterizer (gsplat cuda)", "hashgrid (cpu)"):
        assert name in out
    assert "no CUDA device" in out or "gsplat" in out


def test_demo_fits_an_image(tmp_path):
    result = _talksplat("demo", "--engine-only", "-o", str(tmp_path / "demo"), "--iterations", "30")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert (tmp_path / "demo" / "fit.png").stat().st_size > 10_000
    assert summary["iterations"] == 30
    assert summary["psnr_db"] > 15.0  # 30 steps already beat the ~9 dB of the random start


def test_unwritable_output_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = _talksplat("demo", "--engine-only", "-o", str(blocker / "sub"), "--iterations", "1")
    assert result.returncode == 1      # a runtime failure, not a usage error (2)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot create output folder" in lines[0]
