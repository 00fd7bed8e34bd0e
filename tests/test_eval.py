"""``talksplat eval`` end to end on the tiny demo's trained subject (self-reconstruction and cross-driven)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from talksplat.cli.main import main


@pytest.fixture(scope="module")
def demo(tiny_demo) -> Path:
    """The tiny demo's output folder (a trained subject in work/subject, unseen speech in work/unseen.wav)."""
    return tiny_demo


@pytest.mark.slow
def test_eval_self_reconstruction_writes_report_metrics_and_plots(demo, capsys):
    subject = demo / "work" / "subject"
    assert main(["eval", str(subject), "--quiet"]) == 0
    assert "report.md" in capsys.readouterr().out
    out = subject / "eval"
    for name in ("report.md", "metrics.json", "per_frame_psnr.png", "mouth_vs_envelope.png", "nose_spectra.png",
                 "landmarks.npz"):
        assert (out / name).stat().st_size > 0, name
    m = json.loads((out / "metrics.json").read_text())
    assert m["mode"] == "self" and m["frames"]["evaluated"] == 14
    full, head = m["image"]["full"], m["image"]["head"]
    assert 15 < head["psnr"] < full["psnr"] < 100 and 0 < full["ssim"] <= 1 and 0 < full["ms_ssim"] <= 1
    assert full["ms_ssim_scales"] == 3 and full["lpips"] is None          # 64 px; no LPIPS weights given
    motion = m["motion"]
    assert motion["frames_tracked"]["both"] >= 10
    assert 0 <= motion["lmd_mouth_px"] < 10 and 0 <= motion["lmd_all_px"] < 10
    assert 0 <= motion["expression_error"]["mean"] <= 1
    assert set(m["sync"]) == {"label", "ours", "reference"}
    assert m["sync"]["ours"]["reliable"] is False                         # 14 frames: too short to trust
    st = m["stability"]
    assert 0 <= st["ours"]["score"] <= 1 and 0 <= st["reference"]["score"] <= 1
    assert m["efficiency"]["train_seconds"] > 0 and m["efficiency"]["render_fps"] > 0
    assert len(m["per_frame"]["psnr_full"]) == 14
    eyes, mouth = m["eyes"], m["mouth_interior"]
    assert eyes["ours"]["frames"] == eyes["reference"]["frames"] == 14
    assert 0 < eyes["reference"]["ear_min"] <= eyes["reference"]["ear_p5"] <= eyes["reference"]["ear_median"] < 1
    assert eyes["psnr_eye_region_frames"] == 14 and 10 < eyes["psnr_eye_region"] < 100
    assert len(m["per_frame"]["ear_ours"]) == 14 and len(m["per_frame"]["psnr_mouth_interior"]) == 14
    assert mouth["frames"] == sum(x is not None for x in m["per_frame"]["psnr_mouth_interior"])
    teeth = mouth["teeth_by_opening"]
    assert len(teeth["bins"]) == len(teeth["percentiles"]) + 1 and "ours_on_reference_frames" in teeth["bins"][0]
    assert sum(row["reference_frames"] for row in teeth["bins"]) >= 10   # the tracked real frames
    report = (out / "report.md").read_text()
    for text in ("not computed: no local backbone weights (pass --lpips-weights DIR)",
                 "not SyncNet Sync-C", "AUE analogue", "GaussianFlameTalk", "pixels of a 256x256 crop",
                 "![per-frame PSNR](per_frame_psnr.png)", "## Eyes", "EAR 5th percentile", "Eye-region PSNR",
                 "## Mouth interior", "sharpness ratio", "Teeth: the share of inner-lip pixels",
                 "Offset score profile"):
        assert text in report, text


@pytest.mark.slow
def test_eval_cross_driven_scores_sync_and_stability(demo, tmp_path, capsys):
    subject, out = demo / "work" / "subject", tmp_path / "driven"
    assert main(["eval", str(subject), "--audio", str(demo / "work" / "unseen.wav"), "-o", str(out),
                 "--quiet", "--reference-seconds", "4"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["mode"] == "cross" and m["frames"]["evaluated"] == 25 and m["frames"]["reference_frames"] == 100
    assert "not_applicable" in m["image"] and "not_applicable" in m["motion"]
    assert m["sync"]["reference"]["frames"] == 100 and m["sync"]["ours"]["frames"] == 25
    assert m["stability"]["ours"]["frames"] == 25
    assert m["eyes"]["ours"]["frames"] == 25 and m["eyes"]["reference"]["frames"] == 100
    assert "psnr_eye_region" not in m["eyes"] and m["mouth_interior"]["psnr"] is None
    assert "ours_on_reference_frames" not in m["mouth_interior"]["teeth_by_opening"]["bins"][0]   # not paired
    assert m["plots"] == ["mouth_vs_envelope.png", "nose_spectra.png"]
    assert "Not applicable" in (out / "report.md").read_text()


@pytest.mark.slow
def test_eval_bad_input_is_a_one_line_error(demo, tmp_path, capsys):
    subject = demo / "work" / "subject"
    assert main(["eval", str(subject), "--audio", str(tmp_path / "missing.wav")]) == 2
    assert main(["eval", str(tmp_path / "nothing")]) == 2
    assert main(["eval", str(subject), "--lpips-weights", str(tmp_path)]) == 2     # empty folder
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("talksplat eval: error:") for line in errors)
    assert "missing.wav does not exist" in errors[0] and "no AlexNet backbone" in errors[2]
