"""talksplat.features.sync: offset estimation (no weights), the trainable sync encoder, sync-train CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from talksplat.cli.main import main as cli_main
from talksplat.errors import TalksplatError
from talksplat.features.audio import load_audio_16k
from talksplat.features.registry import AudioFeatures
from talksplat.features.sync import (
    SyncTrainConfig,
    estimate_offset,
    lip_sync_score,
    load_sync_encoder,
    make_clip,
    shift_audio,
    shift_frame_features,
    train_sync_encoder,
)
from talksplat.features.sync_offset import frame_log_mel
from talksplat.io.audio import save_wav
from talksplat.synthetic import bundled_clips

ASSETS = Path(__file__).resolve().parents[1] / "src" / "talksplat" / "assets" / "audio"
SHARED_VIDEO = Path(__file__).resolve().parents[2] / "shared" / "data" / "video"


def _speech(first: int = 0, count: int = 2) -> np.ndarray:
    """Bundled LibriSpeech clips ``first..first+count-1`` joined: ~30 s of 16 kHz speech."""
    clips = bundled_clips()
    return np.concatenate([load_audio_16k(ASSETS / str(clips[(first + i) % len(clips)]["file"]))
                           for i in range(count)])


def _lips_from_audio(audio: np.ndarray, seed: int = 0) -> np.ndarray:
    """(T, 40, 2) pixel lip landmarks whose shape follows the spectrum of each frame's audio.

    Opening follows low-band energy, width the balance of high vs low bands (so shape, not just
    opening, carries the sound), with head translation/rotation and tracking noise on top.
    """
    rng = np.random.default_rng(seed)
    n = -(-audio.size // 640)
    mel = frame_log_mel(audio, n)
    low, high = mel[:, 5:30].mean(1), mel[:, 50:].mean(1)
    low = (low - low.mean()) / low.std()
    high = (high - high.mean()) / high.std()
    opening = 1 / (1 + np.exp(-1.5 * low))
    width = np.tanh(0.7 * (high - low))
    angle = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    inner = np.stack([(22 + 3 * width)[:, None] * np.cos(angle), (1 + 10 * opening)[:, None] * np.sin(angle)], -1)
    outer = np.stack([(30 + 3 * width)[:, None] * np.cos(angle), (9 + 8 * opening)[:, None] * np.sin(angle)], -1)
    lips = np.concatenate([inner, outer], axis=1)
    roll = 0.05 * np.sin(np.arange(n) / 40)
    rot = np.stack([np.stack([np.cos(roll), -np.sin(roll)], -1), np.stack([np.sin(roll), np.cos(roll)], -1)], -2)
    lips = np.einsum("tkj,tij->tki", lips, rot)
    lips += np.stack([200 + 8 * np.sin(np.arange(n) / 30), 300 + 5 * np.cos(np.arange(n) / 45)], -1)[:, None]
    return (lips + 0.4 * rng.standard_normal(lips.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def speech_and_lips() -> tuple[np.ndarray, np.ndarray]:
    audio = _speech()
    return audio, _lips_from_audio(audio)


# ---------------------------------------------------------------------------------------------- offset


@pytest.mark.parametrize("delay", [0, 5, -7, 11])
def test_estimate_offset_recovers_known_delays(speech_and_lips, delay):
    audio, lips = speech_and_lips
    est = estimate_offset(lips, shift_audio(audio, -delay))    # audio delayed by `delay` frames
    assert abs(est.offset_frames - delay) <= 1
    assert est.reliable and est.confidence > 0.05
    assert est.scores.shape == (31,) and int(est.shifts[np.argmax(est.scores)]) == est.offset_frames


def test_estimate_offset_of_unrelated_audio_is_not_reliable(speech_and_lips):
    audio, lips = speech_and_lips
    other = _speech(first=2, count=2)[: audio.size]
    est = estimate_offset(lips, other)
    assert not est.reliable and est.reason


def test_estimate_offset_handles_missing_frames_and_short_clips(speech_and_lips):
    audio, lips = speech_and_lips
    holey = lips.copy()
    holey[100:110] = np.nan                                   # face lost for 0.4 s
    assert abs(estimate_offset(holey, shift_audio(audio, -4)).offset_frames - 4) <= 1
    short = estimate_offset(lips[:150], audio[: 150 * 640])   # 6 s: never trusted
    assert not short.reliable
    assert not estimate_offset(lips, np.zeros_like(audio)).reliable
    with pytest.raises(TalksplatError, match="25 fps"):
        estimate_offset(lips, audio, fps=30.0)
    with pytest.raises(TalksplatError, match=r"\(T, K, 2\)"):
        estimate_offset(lips[:, :, 0], audio)


def test_offset_correction_round_trip(speech_and_lips):
    audio, lips = speech_and_lips
    delayed = shift_audio(audio, -5)
    est = estimate_offset(lips, delayed)
    corrected = shift_audio(delayed, est.offset_frames)
    assert abs(estimate_offset(lips, corrected).offset_frames) <= 1
    feats = np.arange(10)[:, None] * np.ones((1, 3))
    np.testing.assert_array_equal(shift_frame_features(feats, 2)[:, 0], [2, 3, 4, 5, 6, 7, 8, 9, 9, 9])


@pytest.mark.shared_data
@pytest.mark.skipif(not SHARED_VIDEO.is_dir(), reason="../shared/data is absent")
def test_estimate_offset_on_real_clip_with_known_delay():
    from talksplat.features.sync_model import track_video_lips

    video = SHARED_VIDEO / "german_anchor_20s_512.mp4"
    lips, audio = track_video_lips(video, progress=False), load_audio_16k(video)
    base = estimate_offset(lips, audio)
    delayed = estimate_offset(lips, shift_audio(audio, -5))
    assert base.reliable and abs(base.offset_frames) <= 1    # a broadcast clip: in sync
    assert delayed.reliable and abs(delayed.offset_frames - 5) <= 1
    fixed = estimate_offset(lips, shift_audio(shift_audio(audio, -5), delayed.offset_frames))
    assert abs(fixed.offset_frames) <= 1


# ---------------------------------------------------------------------------------------------- encoder


@pytest.fixture(scope="module")
def trained(speech_and_lips, tmp_path_factory):
    audio, lips = speech_and_lips
    out = tmp_path_factory.mktemp("sync_model")
    cfg = SyncTrainConfig(minutes=2.0, max_steps=300, seed=0)
    result = train_sync_encoder([make_clip(lips, audio, "synthetic")], cfg, out, progress=False)
    return result, out


def test_sync_encoder_learns_and_scores_offsets(trained, speech_and_lips):
    result, _ = trained
    audio, lips = speech_and_lips
    assert result.steps == 300 and np.isfinite(result.final_loss)
    aligned = lip_sync_score(result.model, make_clip(lips, audio))
    assert abs(aligned.offset_frames) <= 1 and aligned.confidence > 0.1
    delayed = lip_sync_score(result.model, make_clip(lips, shift_audio(audio, -6)))
    assert abs(delayed.offset_frames - 6) <= 1
    assert delayed.similarity < aligned.similarity


def test_sync_encoder_saved_as_safetensors_and_loads(trained, speech_and_lips, tmp_path):
    result, out = trained
    assert (out / "sync_encoder.safetensors").is_file()
    meta = json.loads((out / "sync_encoder.json").read_text())
    assert meta["format"] == "talksplat-sync-encoder/1" and meta["train"]["max_steps"] == 300
    model, _ = load_sync_encoder(out)
    audio, lips = speech_and_lips
    clip = make_clip(lips, audio)
    np.testing.assert_allclose(lip_sync_score(model, clip).scores, lip_sync_score(result.model, clip).scores,
                               atol=1e-6)
    # the audio branch as a feature
    wav = save_wav(tmp_path / "speech.wav", audio[: 3 * 16000])
    feats = AudioFeatures(f"avsync:{out}").compute(wav)
    assert feats.shape == (75, 64)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)


def test_sync_encoder_load_errors(trained, tmp_path):
    _, out = trained
    with pytest.raises(TalksplatError, match="no sync encoder"):
        load_sync_encoder(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "sync_encoder.safetensors").write_bytes((out / "sync_encoder.safetensors").read_bytes())
    meta = json.loads((out / "sync_encoder.json").read_text())
    meta["config"]["embed_dim"] = 32
    (broken / "sync_encoder.json").write_text(json.dumps(meta))
    with pytest.raises(TalksplatError, match="does not match"):
        load_sync_encoder(broken)
    with pytest.raises(TalksplatError, match="avsync:MODEL_DIR"):
        _ = AudioFeatures("avsync").frame_shape


def test_training_rejects_short_clips(speech_and_lips):
    audio, lips = speech_and_lips
    with pytest.raises(TalksplatError, match="too short"):
        train_sync_encoder([make_clip(lips[:50], audio[: 50 * 640])], SyncTrainConfig(max_steps=1), progress=False)


def test_sync_train_cli(speech_and_lips, tmp_path, capsys):
    audio, lips = speech_and_lips
    np.save(tmp_path / "lips.npy", lips)
    wav = save_wav(tmp_path / "speech.wav", shift_audio(audio, -4))
    code = cli_main(["sync-train", str(tmp_path / "model"), "--landmarks", str(tmp_path / "lips.npy"),
                     "--audio", str(wav), "--steps", "3", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "offset +4 frames" in out or "offset +3 frames" in out or "offset +5 frames" in out
    assert (tmp_path / "model" / "sync_encoder.safetensors").is_file()
    assert cli_main(["sync-train", str(tmp_path / "m2")]) == 2            # nothing to train on
    assert "nothing to train on" in capsys.readouterr().err


def test_prepared_subject_adapter(speech_and_lips, tmp_path):
    from talksplat.features.sync_model import LIP_INDICES, prepared_lips_audio

    audio, lips = speech_and_lips
    subject = tmp_path / "subject"
    (subject / "tracking").mkdir(parents=True)
    full = np.zeros((len(lips), 478, 3), np.float32)
    full[:, list(LIP_INDICES), :2] = lips
    np.save(subject / "landmarks.npy", full)
    detected = np.ones(len(lips), bool)
    detected[10:12] = False
    np.save(subject / "tracking" / "detected.npy", detected)
    save_wav(subject / "audio" / "audio.wav", audio)
    got_lips, got_audio = prepared_lips_audio(subject)
    assert got_lips.shape == lips.shape and np.isnan(got_lips[10:12]).all()
    np.testing.assert_allclose(got_lips[20], lips[20])
    assert abs(got_audio.size - audio.size) <= 1
    with pytest.raises(TalksplatError, match="not a prepared subject"):
        prepared_lips_audio(tmp_path)
