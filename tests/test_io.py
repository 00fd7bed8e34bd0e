"""talksplat.io: MP4 writing/reading, audio loading/resampling, atomic outputs."""

from __future__ import annotations

import os
import stat
import wave

import numpy as np
import pytest

from talksplat.errors import TalksplatError
from talksplat.io import (
    VideoWriter,
    fit_length,
    iter_frames,
    load_audio,
    probe_video,
    read_video,
    save_wav,
    write_video,
)

SR, FPS = 16_000, 25


def _frames(n: int, h: int = 64, w: int = 96) -> np.ndarray:
    """Frames whose brightness encodes the frame index (survives lossy coding)."""
    frames = np.zeros((n, h, w, 3), np.uint8)
    frames[:] = (np.arange(n) * (200 // max(n, 1)) + 20)[:, None, None, None]
    frames[:, : h // 2, : w // 2, 0] = 255  # some structure
    return frames


def _bursts(num_samples: int, starts: list[int], length: int = 800, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    audio = np.zeros(num_samples, np.float32)
    for s in starts:
        audio[s:s + length] = 0.5 * rng.standard_normal(length).astype(np.float32)
    return audio


def test_video_roundtrip_frame_count_and_duration(tmp_path):
    n = 50
    frames = _frames(n)
    path = write_video(tmp_path / "v.mp4", frames, fps=FPS)
    info = probe_video(path)
    assert (info.width, info.height, info.fps, info.num_frames) == (96, 64, 25.0, n)
    assert info.duration == pytest.approx(n / FPS, abs=1e-6)
    assert not info.has_audio
    decoded = read_video(path)
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    # Brightness of each frame survives H.264 within a few levels, in order.
    np.testing.assert_allclose(decoded[:, -8:, -8:].mean(axis=(1, 2, 3)), frames[:, -8:, -8:].mean(axis=(1, 2, 3)),
                               atol=3)
    times = [t for t, _ in iter_frames(path)]
    np.testing.assert_allclose(times, np.arange(n) / FPS, atol=1e-6)


def test_muxed_audio_length_and_alignment(tmp_path):
    n = 75                                     # 3 s
    num = n * SR // FPS
    starts = [4000, 17_000, 33_333]
    audio = _bursts(num, starts)
    path = write_video(tmp_path / "av.mp4", _frames(n), fps=FPS, audio=audio, sample_rate=SR)
    info = probe_video(path)
    assert info.has_audio and info.audio_sample_rate == SR
    assert abs(info.audio_duration - info.duration) <= 1 / FPS
    back = load_audio(path)
    assert abs(back.size - num) <= SR // FPS   # within one frame
    # The bursts are where they were written (AAC priming is compensated), to within 1 ms.
    env_in = np.convolve(np.abs(audio), np.ones(64), "same")
    env_out = np.convolve(np.abs(back[:num]), np.ones(64), "same")
    lags = np.arange(-200, 201)
    corr = [np.dot(env_in[200:-200], np.roll(env_out, -lag)[200:-200]) for lag in lags]
    assert abs(lags[int(np.argmax(corr))]) <= SR // 1000


def test_writer_rejects_bad_frames_and_odd_sizes(tmp_path):
    with pytest.raises(TalksplatError):
        VideoWriter(tmp_path / "odd.mp4", 63, 64)
    with VideoWriter(tmp_path / "ok.mp4", 64, 64) as writer:
        with pytest.raises(ValueError):
            writer.write(np.zeros((32, 32, 3), np.uint8))
        writer.write(np.zeros((64, 64, 3), np.uint8))
    assert probe_video(tmp_path / "ok.mp4").num_frames == 1


def test_failed_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError), VideoWriter(target, 64, 64) as writer:
        writer.write(np.zeros((64, 64, 3), np.uint8))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_outputs_get_normal_permissions(tmp_path):
    path = write_video(tmp_path / "p.mp4", _frames(2))
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_load_audio_resamples_and_mixes_to_mono(tmp_path):
    sr_in, seconds, freq = 44_100, 1.5, 440.0
    t = np.arange(int(sr_in * seconds)) / sr_in
    left = 0.4 * np.sin(2 * np.pi * freq * t)
    stereo = np.stack([left, left], axis=1)
    path = tmp_path / "stereo.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(sr_in)
        w.writeframes((stereo * 32767).astype("<i2").tobytes())
    mono = load_audio(path, SR)
    assert mono.dtype == np.float32 and mono.ndim == 1
    assert abs(mono.size - int(seconds * SR)) <= 2
    spectrum = np.abs(np.fft.rfft(mono[1000:-1000]))
    peak_hz = np.argmax(spectrum) * SR / (mono.size - 2000)
    assert peak_hz == pytest.approx(freq, abs=2.0)
    assert np.abs(mono).max() == pytest.approx(0.4, abs=0.03)


def test_save_wav_roundtrip(tmp_path):
    x = (0.3 * np.sin(np.arange(SR) / 10)).astype(np.float32)
    path = save_wav(tmp_path / "a.wav", x, SR)
    y = load_audio(path, SR)
    assert y.size == x.size
    np.testing.assert_allclose(y, x, atol=1e-4)


def test_fit_length_trims_and_loops():
    x = np.ones(1000, np.float32)
    assert fit_length(x, 600).shape == (600,)
    looped = fit_length(x, 5000)
    assert looped.shape == (5000,)
    assert looped[:900].min() == 1.0            # the clip itself is untouched
    assert (looped == 0).any()                  # a short pause between repetitions
    assert fit_length(np.zeros(0, np.float32), 10).shape == (10,)


def test_missing_files_are_user_errors(tmp_path):
    with pytest.raises(TalksplatError):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(TalksplatError):
        probe_video(tmp_path / "nope.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(TalksplatError):
        read_video(bad)


def test_a_folder_is_named_as_a_folder_not_a_missing_file(tmp_path):
    for load, kind in ((load_audio, "audio"), (probe_video, "video")):
        with pytest.raises(TalksplatError, match=f"is a folder; give the {kind} file itself"):
            load(tmp_path)
    with pytest.raises(TalksplatError, match="no such file"):
        load_audio(tmp_path / "nope.wav")


def test_video_without_audio_is_a_user_error_for_load_audio(tmp_path):
    path = write_video(tmp_path / "silent.mp4", _frames(3))
    with pytest.raises(TalksplatError, match="no audio"):
        load_audio(path)


@pytest.mark.parametrize("codec, suffix, rate", [("flac", ".flac", 22_050), ("libmp3lame", ".mp3", 44_100),
                                                 ("aac", ".m4a", 48_000), ("libopus", ".ogg", 48_000)])
def test_load_audio_formats(tmp_path, codec, suffix, rate):
    import av

    seconds = 1.0
    t = np.arange(int(rate * seconds)) / rate
    signal = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    path = tmp_path / f"tone{suffix}"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        size = 1152 if codec == "libmp3lame" else 960 if codec == "libopus" else 1024
        for i in range(0, signal.size, size):
            chunk = signal[i:i + size]
            if chunk.size < size and codec in ("libmp3lame", "libopus"):
                chunk = np.pad(chunk, (0, size - chunk.size))
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate = rate
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    mono = load_audio(path, SR)
    assert abs(mono.size / SR - seconds) < 0.1          # lossy codecs may pad a frame
    spectrum = np.abs(np.fft.rfft(mono[800:-800]))
    assert np.argmax(spectrum) * SR / (mono.size - 1600) == pytest.approx(300, abs=3)


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path):
    import subprocess
    import sys

    from talksplat.io.atomic import write_bytes_atomic

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    stale = tmp_path / f".out.{int(dead.stdout)}.abc123.tmp.mp4"      # what kill -9 mid-render leaves
    live = tmp_path / f".out.{os.getpid()}.def456.tmp.mp4"            # a write still in progress here
    other = tmp_path / f".other.{int(dead.stdout)}.x.tmp.mp4"
    for p in (stale, live, other):
        p.write_bytes(b"partial")
    write_bytes_atomic(tmp_path / "out.mp4", b"done")
    assert (tmp_path / "out.mp4").read_bytes() == b"done"
    assert not stale.exists() and live.exists() and other.exists()
