"""Fixtures shared by several test files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """The tiny demo's output folder, made once per test session (``talksplat demo --tiny``:
    summary.json, talking.mp4, side_by_side.mp4; a trained subject in work/subject, unseen speech
    in work/unseen.wav). Tests only read it or write below it into folders of their own."""
    out = tmp_path_factory.mktemp("tiny_demo") / "demo"
    result = subprocess.run([sys.executable, "-m", "talksplat.cli.main", "demo", "--tiny", "-o", str(out)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-800:]
    return out


@pytest.fixture(scope="session")
def tiny_subject(tmp_path_factory) -> Path:
    """A tiny prepared synthetic subject (5.6 s, 128^2), made once per test session; tests write
    their runs elsewhere (``-o``)."""
    from talksplat.prepare import PrepareConfig, prepare
    from talksplat.synthetic import SynthConfig, generate

    synth = generate(SynthConfig.tiny(seed=2, seconds=5.6, use_phones=False), tmp_path_factory.mktemp("synth"))
    out = tmp_path_factory.mktemp("subject") / "s"
    prepare(synth.video, out, PrepareConfig(size=128), quiet=True)
    return out
