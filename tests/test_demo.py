"""The full demo pipeline in its tiny configuration."""

from __future__ import annotations

import json

import pytest

from talksplat.io.video import probe_video


@pytest.mark.slow
def test_tiny_demo_writes_playable_videos_with_audio(tiny_demo):
    out = tiny_demo  # the fixture asserts that `talksplat demo --tiny` exited with 0
    summary = json.loads((out / "summary.json").read_text())
    talking = probe_video(out / "talking.mp4")
    assert talking.has_audio
    assert talking.num_frames == summary["talking"]["frames"] == round(25 * summary["talking"]["seconds"])
    assert abs(talking.audio_duration - talking.num_frames / 25) <= 1 / 25
    side = probe_video(out / "side_by_side.mp4")
    assert side.width == 2 * side.height and side.has_audio
    assert side.num_frames == summary["side_by_side"]["frames"] > 0
    assert summary["held_out"]["finetune"]["psnr"] > 15.0
