"""talksplat.features.audio / phones / pretrained: frame alignment, shapes, resampling, caching, errors."""

from __future__ import annotations

import math
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from talksplat.errors import TalksplatError
from talksplat.features.audio import (
    MEL_BANDS,
    WINDOW_LEAD,
    fit_to_frames,
    load_audio_16k,
    mel_filterbank,
    mel_windows,
    num_frames_for_duration,
    num_frames_for_samples,
    shift_audio,
)
from talksplat.features.phones import NUM_PHONES, PHONES, SILENCE
from talksplat.features.registry import AudioFeatures, compute_default_features, parse_feature_name
from talksplat.io.audio import save_wav
from talksplat.synthetic import bundled_clips

SR = 16_000
ASSETS = Path(__file__).resolve().parents[1] / "src" / "talksplat" / "assets" / "audio"


def _speech() -> Path:
    return ASSETS / str(bundled_clips()[0]["file"])


def _write_pcm(path: Path, samples: np.ndarray, rate: int) -> Path:
    """Write (N,) or (N, C) float samples as 16-bit PCM WAV at ``rate``."""
    samples = samples[:, None] if samples.ndim == 1 else samples
    with wave.open(str(path), "wb") as w:
        w.setnchannels(samples.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.round(np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def _clicks(seconds: float, rate: int, times: list[float], tone_level: float = 0.0) -> np.ndarray:
    """Quiet noise with short loud clicks (2 ms) at ``times`` seconds."""
    n = round(seconds * rate)
    audio = 1e-3 * np.random.default_rng(0).standard_normal(n)
    audio += tone_level * np.sin(2 * np.pi * 1000.0 * np.arange(n) / rate)
    for t in times:
        start = round(t * rate)
        audio[start:start + max(rate // 500, 1)] += 0.8
    return audio.astype(np.float32)


def _frame_energy(mel: np.ndarray) -> np.ndarray:
    """(T,) energy of each frame's own four 10 ms steps (the centre of its 16-step window)."""
    return np.exp(mel[:, WINDOW_LEAD:WINDOW_LEAD + 4]).sum(axis=(1, 2))


# ---------------------------------------------------------------------------------------------- frames


def test_frame_count_definition():
    assert num_frames_for_samples(0) == 0
    assert num_frames_for_samples(640) == 1
    assert num_frames_for_samples(641) == 1            # < 5 ms over: container padding, not a frame
    assert num_frames_for_samples(640 + 80) == 1       # exactly 5 ms over: still padding
    assert num_frames_for_samples(640 + 81) == 2       # more: a real partial frame
    assert num_frames_for_samples(20 * SR) == 500
    assert num_frames_for_duration(1.37) == 35         # 34.25 frames -> 35
    assert num_frames_for_duration(3.2) == 80


@pytest.mark.parametrize("click_time", [0.313, 0.5, 1.017, 1.733, 2.46])
def test_click_lands_in_its_frame(click_time):
    mel = mel_windows(_clicks(3.0, SR, [click_time]))
    assert mel.shape == (75, 16, MEL_BANDS)
    assert int(np.argmax(_frame_energy(mel))) == math.floor(25 * click_time)


def test_windows_are_centred_on_their_frame():
    # the click of frame 30 appears in the windows of frames 29..31 at steps moving 4 per frame
    mel = mel_windows(_clicks(3.0, SR, [30.5 / 25]))
    peak_steps = [int(np.argmax(np.exp(mel[t]).sum(axis=1))) for t in (29, 30, 31)]
    assert peak_steps == [WINDOW_LEAD + 4 + 2 - 1 + 1, WINDOW_LEAD + 2, WINDOW_LEAD - 4 + 2]


@pytest.mark.parametrize("seconds", [0.21, 1.37, 2.999, 4.04])
def test_shapes_for_odd_durations(tmp_path, seconds):
    rng = np.random.default_rng(1)
    path = _write_pcm(tmp_path / "odd.wav", 0.1 * rng.standard_normal(round(seconds * SR)), SR)
    expected = num_frames_for_duration(seconds)
    assert AudioFeatures("mel").compute(path).shape == (expected, 16, 80)
    assert AudioFeatures("phones").compute(path).shape == (expected, NUM_PHONES)
    assert AudioFeatures("mel+phones").compute(path).shape == (expected, 16, 80 + NUM_PHONES)
    assert AudioFeatures("mel").compute(path, n_frames=expected + 3).shape == (expected + 3, 16, 80)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampling_from_stereo_files(tmp_path, rate):
    click = 1.21
    left = _clicks(2.0, rate, [click], tone_level=0.2)
    right = -0.5 * left                            # the mono mix keeps the click (not cancelled)
    path = _write_pcm(tmp_path / f"stereo_{rate}.wav", np.stack([left, right], axis=1), rate)
    samples = load_audio_16k(path)
    assert abs(samples.size - 2 * SR) <= 2
    mel = mel_windows(samples)
    assert mel.shape[0] == 50
    assert int(np.argmax(_frame_energy(mel))) == math.floor(25 * click)
    # the 1 kHz tone's energy sits in the mel band whose filter peaks nearest 1 kHz
    quiet = mel[5:20, WINDOW_LEAD].mean(axis=0)
    freqs = np.linspace(0, SR / 2, mel_filterbank().shape[0])
    assert abs(freqs[np.argmax(mel_filterbank()[:, int(np.argmax(quiet))])] - 1000.0) < 80.0


@pytest.mark.parametrize("codec,suffix,rate,frame_size", [
    ("flac", ".flac", 44_100, 1024), ("aac", ".m4a", 48_000, 1024),
    ("libmp3lame", ".mp3", 44_100, 1152), ("libopus", ".ogg", 48_000, 960)])
def test_compressed_formats_decode_aligned(tmp_path, codec, suffix, rate, frame_size):
    click = 0.93
    audio = _clicks(1.6, rate, [click], tone_level=0.05)
    audio = np.pad(audio, (0, -audio.size % frame_size))       # whole encoder frames
    path = tmp_path / f"clip{suffix}"
    try:
        with av.open(str(path), "w") as out:
            stream = out.add_stream(codec, rate=rate, layout="mono")
            for start in range(0, audio.size, frame_size):
                frame = av.AudioFrame.from_ndarray(audio[None, start:start + frame_size], format="flt",
                                                   layout="mono")
                frame.sample_rate, frame.pts = rate, start
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
    except (av.FFmpegError, ValueError) as exc:   # pragma: no cover - depends on the FFmpeg build
        pytest.skip(f"this FFmpeg cannot encode {codec}: {exc}")
    mel = AudioFeatures("mel").compute(path)
    assert abs(mel.shape[0] - num_frames_for_duration(audio.size / rate)) <= 1   # lossy codecs may pad
    assert int(np.argmax(_frame_energy(mel))) == math.floor(25 * click)


# ---------------------------------------------------------------------------------------------- phones


def test_phone_posteriors_of_speech():
    feats = AudioFeatures("phones").compute(_speech())
    assert feats.shape == (num_frames_for_samples(load_audio_16k(_speech()).size), NUM_PHONES)
    np.testing.assert_allclose(feats.sum(axis=1), 1.0, atol=1e-5)
    dominant = feats.argmax(axis=1)
    assert np.mean(dominant != SILENCE) > 0.5                 # read speech is mostly phones
    assert len(set(dominant.tolist())) > 20                   # and many different ones
    assert feats.max(axis=1).min() < 0.99                     # soft at boundaries
    assert PHONES[0] == "SIL" and len(PHONES) == 40


# ---------------------------------------------------------------------------------------------- caching


def test_default_features_cached_and_invalidated(tmp_path):
    audio = load_audio_16k(_speech())[: 3 * SR]
    src = save_wav(tmp_path / "in.wav", audio)
    out = tmp_path / "features"
    paths = compute_default_features(src, 80, out)
    assert set(paths) == {"mel", "phones"}
    mel = np.load(paths["mel"])
    assert mel.shape == (80, 16, 80) and mel.dtype == np.float32
    assert np.load(paths["phones"]).shape == (80, 40)
    stamps = {k: p.stat().st_mtime_ns for k, p in paths.items()}

    compute_default_features(src, 80, out)                    # same content: nothing rewritten
    assert {k: p.stat().st_mtime_ns for k, p in paths.items()} == stamps

    save_wav(src, 0.5 * audio)                                 # content changed: recomputed
    compute_default_features(src, 80, out)
    assert paths["mel"].stat().st_mtime_ns != stamps["mel"]
    assert not np.allclose(np.load(paths["mel"]), mel)

    compute_default_features(src, 90, out)                     # another frame count: recomputed
    assert np.load(paths["mel"]).shape == (90, 16, 80)

    paths["phones"].write_bytes(b"garbage")                    # a damaged output is redone
    compute_default_features(src, 90, out)
    assert np.load(paths["phones"]).shape == (90, 40)


def test_audio_features_cache_dir(tmp_path):
    src = save_wav(tmp_path / "in.wav", load_audio_16k(_speech())[: 2 * SR])
    feats = AudioFeatures("mel", cache_dir=tmp_path / "cache")
    first = feats.compute(src)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    np.testing.assert_array_equal(feats.compute(src), first)
    save_wav(src, 0.25 * load_audio_16k(_speech())[: 2 * SR])
    assert not np.allclose(feats.compute(src), first)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2


# ---------------------------------------------------------------------------------------------- errors


def test_unreadable_file(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(TalksplatError, match="cannot"):
        AudioFeatures("mel").compute(bad)
    with pytest.raises(TalksplatError, match="no such file"):
        AudioFeatures("mel").compute(tmp_path / "missing.wav")
    with pytest.raises(TalksplatError, match="is a folder"):
        AudioFeatures("mel").compute(tmp_path)


def test_empty_silent_and_short_audio(tmp_path):
    with pytest.raises(TalksplatError, match="no audio samples"):
        load_audio_16k(_write_pcm(tmp_path / "empty.wav", np.zeros(0), SR))
    with pytest.raises(TalksplatError, match="silent"):
        AudioFeatures("mel").compute(_write_pcm(tmp_path / "silent.wav", np.zeros(SR), SR))
    with pytest.raises(TalksplatError, match="at least"):
        AudioFeatures("mel").compute(_write_pcm(tmp_path / "short.wav", 0.1 * np.ones(1600), SR))
    with pytest.raises(TalksplatError):
        compute_default_features(_write_pcm(tmp_path / "silent2.wav", np.zeros(SR), SR), 25, tmp_path / "o")


def test_feature_names():
    assert parse_feature_name("mel+phones").kind == "mel+phones"
    assert parse_feature_name("wav2vec2:/models/w2v").path == "/models/w2v"
    assert parse_feature_name("avsync").path is None
    with pytest.raises(TalksplatError, match="unknown audio feature"):
        parse_feature_name("deepspeech")
    with pytest.raises(TalksplatError, match="local model folder"):
        parse_feature_name("hubert")
    with pytest.raises(TalksplatError, match="takes no path"):
        parse_feature_name("mel:/x")


def test_fit_to_frames():
    x = np.arange(1000, dtype=np.float32)
    assert fit_to_frames(x, 1).shape == (640,)
    padded = fit_to_frames(x, 2)
    assert padded.shape == (1280,) and padded[999] == 999 and padded[1000:].max() == 0


# ---------------------------------------------------------------------------------------------- pretrained


def _tiny_model(kind: str, path: Path) -> Path:
    transformers = pytest.importorskip("transformers")
    if kind == "wav2vec2":
        config = transformers.Wav2Vec2Config(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            conv_dim=(16, 16, 16, 16, 16, 16, 16), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
        model = transformers.Wav2Vec2Model(config)
    else:
        config = transformers.HubertConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            conv_dim=(16, 16, 16, 16, 16, 16, 16), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
        model = transformers.HubertModel(config)
    model.save_pretrained(path)
    transformers.Wav2Vec2FeatureExtractor(sampling_rate=SR, do_normalize=True).save_pretrained(path)
    return path


@pytest.mark.parametrize("kind", ["wav2vec2", "hubert"])
def test_tiny_local_pretrained_encoder(tmp_path, kind):
    model_dir = _tiny_model(kind, tmp_path / kind)
    src = save_wav(tmp_path / "in.wav", load_audio_16k(_speech())[: round(1.37 * SR)])
    feats = AudioFeatures(f"{kind}:{model_dir}")
    out = feats.compute(src)
    assert out.shape == (35, 16, 32) == (35, *feats.frame_shape)
    assert np.isfinite(out).all() and out.std() > 0
    # window t covers 50 Hz steps 2t-7 .. 2t+8: frame t+1's window is frame t's moved by 2 steps
    np.testing.assert_allclose(out[11, :-2], out[10, 2:], atol=1e-5)


def test_pretrained_errors(tmp_path):
    pytest.importorskip("transformers")
    with pytest.raises(TalksplatError, match="not found"):
        _ = AudioFeatures(f"wav2vec2:{tmp_path / 'nope'}").frame_shape
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(TalksplatError, match="wav2vec2"):
        _ = AudioFeatures(f"wav2vec2:{tmp_path / 'junk'}").frame_shape


def test_shift_audio_rounds_to_the_nearest_sample_and_keeps_the_length():
    x = np.arange(1, 2001, dtype=np.float32)
    # 30 fps at 16 kHz is 533.3 samples per frame: one frame later is 533 samples (a floor gave 534).
    later = shift_audio(x, -1, SR, 30)
    assert later.shape == x.shape and not later[:533].any() and later[533] == 1
    earlier = shift_audio(x, 2, SR, 30)                   # 1066.7 -> 1067 samples earlier
    assert earlier[0] == 1068 and not earlier[-1067:].any() and earlier.dtype == np.float32
    assert np.array_equal(shift_audio(x, 0), x)
    assert shift_audio(x, 10).shape == x.shape and not shift_audio(x, 10).any()   # past the end: silence

