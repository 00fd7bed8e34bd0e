"""talksplat.synthetic and ``talksplat synth``: a tiny clip, checked against its own ground truth."""

from __future__ import annotations

import json
import wave

import cv2
import numpy as np
import pytest

from talksplat.cli.main import main
from talksplat.io import load_audio, probe_video, read_video
from talksplat.synthetic import SynthConfig, bundled_clips, generate, load_ground_truth, motion
from talksplat.synthetic import template as T

FPS, SR = 25, 16_000


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    result = generate(SynthConfig.tiny(seed=0), out)
    return result


@pytest.fixture(scope="module")
def tiny_gt(tiny):
    return load_ground_truth(tiny.out_dir)


@pytest.fixture(scope="module")
def tiny_frames(tiny):
    return read_video(tiny.video)


def _frame_rms(audio: np.ndarray, n: int) -> np.ndarray:
    hop = SR // FPS
    x = audio[: n * hop].reshape(n, hop).astype(np.float64)
    return np.sqrt((x ** 2).mean(axis=1))


def test_outputs_exist(tiny):
    for path in (tiny.video, tiny.audio, tiny.ground_truth_json, tiny.ground_truth_npz, tiny.meta):
        assert path.is_file() and path.stat().st_size > 0
    assert tiny.num_frames == 80 and tiny.duration == pytest.approx(3.2)


def test_video_decodes_with_stated_frames_and_duration(tiny, tiny_frames):
    gt = json.loads(tiny.ground_truth_json.read_text())
    info = probe_video(tiny.video)
    assert (info.width, info.height, info.fps) == (128, 128, 25.0)
    assert info.num_frames == gt["num_frames"] == 80
    assert tiny_frames.shape == (80, 128, 128, 3)
    assert info.duration == pytest.approx(gt["duration_s"], abs=1e-6)


def test_audio_and_video_durations_agree(tiny):
    info = probe_video(tiny.video)
    assert info.has_audio and info.audio_sample_rate == SR
    assert abs(info.audio_duration - info.duration) <= 1 / FPS
    muxed = load_audio(tiny.video)
    assert abs(muxed.size / SR - info.duration) <= 1 / FPS
    with wave.open(str(tiny.audio)) as w:
        assert w.getframerate() == SR and w.getnframes() == 80 * SR // FPS


def test_same_seed_same_ground_truth_bytes(tiny, tmp_path):
    again = generate(SynthConfig.tiny(seed=0), tmp_path / "again")
    assert again.ground_truth_json.read_bytes() == tiny.ground_truth_json.read_bytes()
    a, b = load_ground_truth(tiny.out_dir), load_ground_truth(again.out_dir)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # No absolute paths or timestamps leak into the deterministic file.
    text = tiny.ground_truth_json.read_text()
    assert str(tiny.out_dir) not in text and "created" not in text


def test_other_seed_differs(tiny, tmp_path):
    other = generate(SynthConfig.tiny(seed=1, use_phones=False, masks=False), tmp_path / "seed1")
    assert other.ground_truth_json.read_bytes() != tiny.ground_truth_json.read_bytes()


def test_mouth_follows_the_audio_envelope_with_a_lead(tiny, tiny_gt):
    # Loudness computed here from the written WAV, independently of the generator's own curve.
    n = tiny.num_frames
    db = 20 * np.log10(_frame_rms(load_audio(tiny.audio), n) + 1e-6)
    mouth = tiny_gt["mouth_open"].astype(np.float64)
    corr = {lag: np.corrcoef(mouth[: n - lag], db[lag:])[0, 1] for lag in range(5)}
    best = max(corr, key=corr.get)
    assert corr[best] > 0.5, corr
    assert best in (1, 2), corr          # the mouth leads the sound by 1-2 frames
    # Silence (before the first word) keeps the lips closed, except just before speech starts.
    low = np.concatenate([np.zeros(3, bool), db < db.max() - 25, np.zeros(3, bool)])
    quiet = np.array([low[i:i + 7].all() for i in range(n)])
    assert quiet.sum() >= 5
    assert np.all(tiny_gt["mouth_open_mm"][quiet] < 1.0)


def test_pose_ground_truth_is_consistent(tiny, tiny_gt):
    rot = tiny_gt["rotation"].astype(np.float64)
    assert np.allclose(rot @ rot.transpose(0, 2, 1), np.eye(3), atol=1e-5)
    assert np.allclose(np.linalg.det(rot), 1.0, atol=1e-5)
    for i in (0, 40, 79):
        rv, _ = cv2.Rodrigues(rot[i])
        np.testing.assert_allclose(rv.ravel(), tiny_gt["rotvec"][i], atol=1e-5)
    # Rigid landmarks (nose, ear-side cheeks) reproject with X_cam = R X_head + t and the intrinsics.
    idx = [1, 4, 234, 454, 127, 356, 195, 197]
    x_head = tiny_gt["template_head_mm"][idx].astype(np.float64)
    for i in range(0, 80, 10):
        fx, fy, cx, cy = tiny_gt["intrinsics"][i]
        x_cam = x_head @ rot[i].T + tiny_gt["translation_mm"][i]
        uv = np.stack([fx * x_cam[:, 0] / x_cam[:, 2] + cx, fy * x_cam[:, 1] / x_cam[:, 2] + cy], axis=1)
        np.testing.assert_allclose(uv, tiny_gt["landmarks_2d"][i, idx], atol=0.05)
    # Head motion is small but present.
    yaw = tiny_gt["euler_deg"][:, 1]
    assert 0.05 < np.ptp(yaw) < 15


def test_masks_match_the_parameters(tiny, tiny_gt):
    mouth_px = tiny_gt["mask_inside_mouth"].sum(axis=(1, 2))
    assert np.corrcoef(mouth_px, tiny_gt["mouth_open_px"])[0, 1] > 0.8
    assert np.all(mouth_px[tiny_gt["mouth_open_mm"] == 0] == 0)
    face, bg = tiny_gt["mask_face"], tiny_gt["mask_background"]
    assert not np.any(face & bg)
    assert not np.any(face & tiny_gt["mask_inside_mouth"])
    assert 0.05 < face.mean() < 0.5 and 0.1 < bg.mean() < 0.9
    # Closed eyes hide the eye-opening pixels.
    eyes = (tiny_gt["labels"] == T.LABEL_VALUES["eye_right"]).sum(axis=(1, 2))
    blink = tiny_gt["blink_right"]
    if blink.max() > 0.9:
        assert eyes[np.argmax(blink)] <= 0.3 * eyes[blink < 0.05].mean()
    # The mesh landmarks project inside the face mask.
    lm = np.round(tiny_gt["landmarks_2d"][0, [1, 4, 6, 168]]).astype(int)
    assert face[0][lm[:, 1], lm[:, 0]].all()


def test_tracker_finds_the_face_and_sees_the_mouth(tiny_frames, tiny_gt):
    from talksplat.tracking import detection_rate, track_frames

    landmarks = track_frames(tiny_frames)
    assert detection_rate(landmarks) >= 0.99
    found = [i for i, lm in enumerate(landmarks) if lm is not None]
    tracked_gap = np.array([np.linalg.norm(landmarks[i][13, :2] - landmarks[i][14, :2]) for i in found])
    assert np.corrcoef(tracked_gap, tiny_gt["mouth_open_px"][found])[0, 1] > 0.8
    # Tracked landmarks agree with the ground-truth projections (median within 3% of the eye distance).
    err = [np.median(np.linalg.norm(landmarks[i][:468, :2] - tiny_gt["landmarks_2d"][i], axis=1)) for i in found]
    iod = np.linalg.norm(tiny_gt["landmarks_2d"][0, 33] - tiny_gt["landmarks_2d"][0, 263])
    assert np.median(err) < 0.03 * iod


def test_blinks_every_two_to_six_seconds():
    rng = np.random.default_rng(3)
    right, left = motion.blink_track(60 * FPS, FPS, rng)
    onsets = np.flatnonzero((right[1:] > 0.5) & (right[:-1] <= 0.5))
    gaps = np.diff(onsets) / FPS
    assert len(onsets) >= 9
    assert gaps.min() >= 1.9 and gaps.max() <= 6.1
    assert np.abs(right - left).max() < 0.15


def test_bundled_clips_are_small_licensed_speech():
    clips = bundled_clips()
    assert len(clips) == 3
    total = 0
    for clip in clips:
        assert "CC BY 4.0" in str(clip["licence"]) and clip["reader"]
        audio = load_audio(str(clip["path"]))
        assert 10 < audio.size / SR < 20
        total += (T.ASSET_DIR.parent / "audio" / str(clip["file"])).stat().st_size
    assert total < 1_000_000


def test_cli_synth_tiny(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["synth", str(out), "--tiny", "--seconds", "1", "--no-phones", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "25 frames" in text and "video.mp4" in text
    assert probe_video(out / "video.mp4").num_frames == 25


def test_cli_synth_with_audio_file_takes_its_length(tmp_path):
    wav = tmp_path / "speech.wav"
    t = np.arange(int(1.3 * SR)) / SR
    tone = (0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes((tone * 32767).astype("<i2").tobytes())
    out = tmp_path / "driven"
    assert main(["synth", str(out), "--audio", str(wav), "--size", "96", "--no-phones", "--quiet"]) == 0
    gt = json.loads((out / "ground_truth.json").read_text())
    assert gt["num_frames"] == round(1.3 * FPS)
    assert gt["config"]["audio"] == "speech.wav"


@pytest.mark.parametrize("args, message", [(["--size", "63"], "even"), (["--audio", "/no/such.wav"], "no such file"),
                                           (["--audio", "/"], "--audio / is a folder")])
def test_cli_synth_user_errors(tmp_path, capsys, args, message):
    assert main(["synth", str(tmp_path / "x"), "--quiet", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
