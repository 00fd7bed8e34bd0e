"""talksplat render: streaming (identical frames, bounded latency), pose options, bounded source-frame
memory, the paste-back seam statistic, and one-line errors with nothing half-written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from talksplat.errors import TalksplatError
from talksplat.render.renderer import RenderOptions, check_output_path, load_driving_audio, pingpong
from talksplat.render.seam import Box, feather_mask, paste, seam_gradient
from talksplat.render.stream import StreamingMel, streaming_feature

RNG = np.random.default_rng(0)


def _speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise bursts under a syllable-rate envelope: a cheap stand-in for speech."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16_000)
    t = np.arange(n) / 16_000
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t) ** 2
    return (0.2 * envelope * rng.standard_normal(n)).astype(np.float32)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------------------------------------- seam
def _scene(height: int = 96, width: int = 128) -> np.ndarray:
    """A smooth frame with some texture (so the gradient statistic is not trivially zero)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([80 + 60 * np.sin(x / 17), 100 + 50 * np.cos(y / 13), 120 + 30 * np.sin((x + y) / 23)], -1)
    return np.clip(base + RNG.normal(0, 4, base.shape), 0, 255).astype(np.uint8)


def _disc(side: int) -> np.ndarray:
    y, x = np.mgrid[0:side, 0:side]
    return (((x - side / 2) ** 2 + (y - side / 2) ** 2) < (side * 0.3) ** 2).astype(np.float32)


def test_seam_statistic_flags_a_hard_offset_paste_and_not_a_feathered_identity_paste():
    frame = _scene()
    box = Box(x0=24, y0=16, side=64)
    alpha = _disc(box.side)
    rows, cols = box.region()
    crop = frame[rows, cols]
    shifted = np.clip(crop.astype(np.int16) + 25, 0, 255).astype(np.uint8)

    hard = paste(frame, shifted, alpha, box)
    hard_stats = seam_gradient([hard], [frame], alpha, box)
    assert hard_stats["rendered"] > 2 * hard_stats["original"] and not hard_stats["no_visible_seam"]

    mask = feather_mask(alpha, box, (frame.shape[1], frame.shape[0]))
    identity = paste(frame, crop, mask, box)
    same = seam_gradient([identity], [frame], mask, box)
    assert abs(same["ratio"] - 1.0) < 0.02, same

    feathered = seam_gradient([paste(frame, shifted, mask, box)], [frame], mask, box)
    assert feathered["rendered"] < hard_stats["rendered"]


def test_feather_mask_fades_to_zero_at_box_edges_inside_the_frame_only():
    alpha = np.ones((32, 32), np.float32)
    inside = feather_mask(alpha, Box(10, 10, 64), (128, 128))
    assert inside.max() > 0.99 and max(inside[0].max(), inside[-1].max(), inside[:, 0].max(), inside[:, -1].max()) < 0.01
    touching = feather_mask(alpha, Box(0, 0, 64), (64, 64))   # the box is the whole frame: nothing to fade
    assert touching.min() > 0.99


# ---------------------------------------------------------------------------------------------- pieces
def test_pingpong_has_no_jump_cuts():
    frames = np.arange(10, 14)
    seq = [pingpong(i, frames) for i in range(12)]
    assert seq == [10, 11, 12, 13, 12, 11, 10, 11, 12, 13, 12, 11]
    assert [pingpong(i, np.array([7])) for i in range(3)] == [7, 7, 7]


def test_streaming_mel_equals_the_offline_feature_and_other_features_refuse_to_stream():
    from talksplat.features.audio import fit_to_frames
    from talksplat.features.registry import AudioFeatures

    x = _speechlike(1.3)
    n = 33
    ref = AudioFeatures("mel").compute_samples(x, n)
    fitted = fit_to_frames(x, n)
    mel = streaming_feature("mel")
    assert isinstance(mel, StreamingMel) and (mel.history, mel.reach) == (1080, 1720)
    # From a buffer that starts mid-clip (at a hop boundary), as the stream holds it.
    offset = 160 * 20        # frames from 7 on need nothing before it (640 t - 1080 >= 3200)
    ours = np.stack([mel.window(fitted[offset:], offset, t) for t in range(7, n)])
    np.testing.assert_allclose(ours, ref[7:], rtol=0, atol=1e-5)
    for name in ("phones", "mel+phones", "avsync", "wav2vec2:/nowhere"):
        with pytest.raises(TalksplatError, match="cannot be streamed"):
            streaming_feature(name)


def test_source_frames_serve_pingpong_order_within_the_memory_bound(tmp_path):
    from talksplat.io.video import VideoWriter, read_video
    from talksplat.render.frames import SourceFrames

    path = tmp_path / "full.mp4"
    with VideoWriter(path, 64, 48, fps=25) as writer:
        for i in range(60):
            frame = np.zeros((48, 64, 3), np.uint8)
            frame[..., 0] = 4 * i
            frame[: i % 48, :, 1] = 200
            writer.write(frame)
    truth = read_video(path)
    frames = SourceFrames(path, max_bytes=6 * truth[0].nbytes)
    assert frames.capacity == 6 and len(frames) == 60
    order = [pingpong(i, np.arange(3, 57)) for i in range(150)] + [0, 59, 80, 20]
    for src in order:
        assert np.array_equal(frames[src], truth[min(src, 59)])
        assert frames.cached_bytes <= 6 * truth[0].nbytes
    assert frames.seeks > 0


def test_output_path_and_audio_checks_give_one_line_errors(tmp_path):
    afile = tmp_path / "a_file"
    afile.write_text("x")
    for bad, message in [(tmp_path / "out.avi", "must be an .mp4"), (tmp_path / "missing" / "o.mp4", "does not exist"),
                         (afile / "o.mp4", "not a folder")]:
        with pytest.raises(TalksplatError, match=message):
            check_output_path(bad)
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(TalksplatError, match="is a folder"):
        check_output_path(tmp_path / "dir.mp4")

    from talksplat.io.audio import save_wav

    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF not really a wave file" * 50)
    silent, speech = tmp_path / "silent.wav", tmp_path / "speech.wav"
    save_wav(silent, np.zeros(16_000, np.float32))
    save_wav(speech, _speechlike(2.0))
    cases = [(tmp_path / "nope.wav", "does not exist"), (corrupt, "cannot open"), (silent, "silent")]
    for path, message in cases:
        with pytest.raises(TalksplatError, match=message) as info:
            load_driving_audio(path)
        assert "\n" not in str(info.value)
    with pytest.raises(TalksplatError, match="limit is 1 s"):
        load_driving_audio(speech, max_seconds=1.0)
    assert load_driving_audio(speech).shape == (32_000,)


# ---------------------------------------------------------------------------------------------- a trained subject
@pytest.fixture(scope="module")
def subject(tiny_demo) -> Path:
    """A tiny trained subject (`talksplat demo --tiny`, shared with the other test files)."""
    return tiny_demo / "work" / "subject"


@pytest.fixture(scope="module")
def renderer(subject):
    from talksplat.render.renderer import Renderer

    return Renderer.open(subject)


@pytest.mark.slow
def test_stream_frames_are_identical_to_offline_with_bounded_latency(renderer):
    x = _speechlike(1.6, seed=3)[:25_123]
    options = RenderOptions(pose="range", pose_range=(20, 31))
    offline = list(renderer.render_frames(x, options))
    assert len(offline) == 40   # ceil(25123 / 640)

    stream = renderer.stream(options)
    assert stream.latency_samples == 3 * 640 + 1720 and stream.latency_frames < 6
    rng = np.random.default_rng(7)
    got, pos = [], 0
    while pos < x.size:
        step = int(rng.integers(1, 2500))
        got += stream.push(x[pos:pos + step])
        pos = min(pos + step, x.size)
        # Every frame whose audio (plus the lookahead) has arrived is out, and no other.
        assert len(got) == max(0, (pos - stream.latency_samples) // 640 + 1)
    got += stream.flush()
    assert len(got) == len(offline)
    assert all(np.array_equal(a, b) for a, b in zip(got, offline, strict=True))

    # The same frames as the plain whole-clip path (features of the whole clip, then frame by frame).
    windows = renderer.audio_windows(x)
    for i in (0, 17, 39):
        whole = renderer.render_frame(i, windows, i, renderer.check_options(options))
        assert np.abs(whole.astype(int) - offline[i].astype(int)).max() <= 1
    with pytest.raises(TalksplatError, match="flushed"):
        stream.push(x[:100])


@pytest.mark.slow
def test_frames_rendered_in_parallel_are_the_frames_rendered_one_at_a_time(renderer):
    """``workers`` > 1 renders several frames at once, one intra-op thread each: the same frames, in
    order (compared at one thread, where the arithmetic is the same), full-frame paste-back included,
    and the process's thread count restored afterwards, also when the caller stops early."""
    import torch

    x = _speechlike(1.0, seed=5)
    options = RenderOptions(pose="range", pose_range=(3, 12), full_frame=True)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one_at_a_time = list(renderer.render_frames(x, options))
        parallel = list(renderer.render_frames(x, options, workers=3))
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        early = renderer.render_frames(x, options, workers=2)
        first = next(early)
        assert torch.get_num_threads() == 1      # while the generator runs
        early.close()
        assert torch.get_num_threads() == 2      # restored when it is closed early
    finally:
        torch.set_num_threads(threads)
    assert len(parallel) == len(one_at_a_time) == 25
    assert all(np.array_equal(a, b) for a, b in zip(parallel, one_at_a_time, strict=True))
    assert np.array_equal(first, one_at_a_time[0])
    with pytest.raises(TalksplatError, match="workers"):
        next(renderer.render_frames(x, options, workers=0))


@pytest.mark.slow
def test_pose_options_choose_the_source_frames(renderer):
    n = renderer.data.n_frames
    loop = renderer.check_options(RenderOptions())
    assert [renderer.source_index(i, loop) for i in range(3)] == [int(f) for f in renderer.data.train_frames[:3]]
    ranged = renderer.check_options(RenderOptions(pose="range", pose_range=(5, 8)))
    assert [renderer.source_index(i, ranged) for i in range(6)] == [5, 6, 7, 6, 5, 6]
    still = renderer.check_options(RenderOptions(pose="still", pose_range=(9, 20)))
    assert {renderer.source_index(i, still) for i in range(5)} == {9}
    for bad in (RenderOptions(pose="range"), RenderOptions(pose="range", pose_range=(5, n + 1)),
                RenderOptions(pose="range", pose_range=(8, 8))):
        with pytest.raises(TalksplatError):
            renderer.check_options(bad)


@pytest.mark.slow
def test_stream_refuses_a_feature_that_cannot_stream(renderer, monkeypatch):
    monkeypatch.setattr(renderer.conditioner, "audio_feature", "phones")
    with pytest.raises(TalksplatError, match="'phones' cannot be streamed"):
        renderer.stream()


def _cli(capsys, *args) -> tuple[int, str, str]:
    from talksplat.cli.main import main

    code = main(["render", *map(str, args), "--quiet"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow
def test_cli_full_frame_render_has_exact_frames_audio_and_no_seam(subject, tmp_path, capsys):
    from talksplat.io.audio import save_wav
    from talksplat.io.video import probe_video

    audio = tmp_path / "speech.wav"
    save_wav(audio, _speechlike(1.37, seed=5))
    out = tmp_path / "full.mp4"
    code, stdout, stderr = _cli(capsys, subject, "--audio", audio, "-o", out, "--full-frame", "--pose-range", "10:30")
    assert code == 0, stderr
    info = probe_video(out)
    assert info.num_frames == round(25 * info.duration) == 35   # ceil((21920 - 80) / 640)
    assert info.has_audio and abs(info.audio_duration - info.num_frames / 25) < 0.03
    full = probe_video(subject / "media" / "full.mp4")
    assert (info.width, info.height) == (full.width, full.height)
    assert "no visible seam" in stdout, stdout
    assert _leftovers(tmp_path) == []

    code, stdout, _ = _cli(capsys, subject, "--audio", audio, "-o", tmp_path / "crop.mp4", "--pose", "still",
                           "--expression", "neutral")
    assert code == 0 and probe_video(tmp_path / "crop.mp4").width == 64


@pytest.mark.slow
def test_cli_bad_input_gives_one_line_errors_and_writes_nothing(subject, tmp_path, capsys, monkeypatch):
    import talksplat.render.renderer as renderer_module
    from talksplat.io.audio import save_wav

    audio = tmp_path / "speech.wav"
    save_wav(audio, _speechlike(2.0, seed=1))
    corrupt = tmp_path / "corrupt.mp3"
    corrupt.write_bytes(bytes(RNG.integers(0, 256, 4000, dtype=np.uint8)))
    untrained = tmp_path / "untrained_run"
    untrained.mkdir()
    not_prepared = tmp_path / "empty_subject"
    not_prepared.mkdir()
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    out = tmp_path / "out.mp4"
    cases = {
        "missing audio": ([subject, "--audio", tmp_path / "none.wav", "-o", out], "does not exist"),
        "corrupt audio": ([subject, "--audio", corrupt, "-o", out], "cannot"),
        "not trained": ([subject, "--audio", audio, "-o", out, "--run", untrained], "no trained model"),
        "not prepared": ([not_prepared, "--audio", audio, "-o", out], "not a prepared subject"),
        "unwritable output": ([subject, "--audio", audio, "-o", blocker / "out.mp4"], "not a folder"),
        "bad pose range": ([subject, "--audio", audio, "-o", out, "--pose-range", "100:999"], "pose range"),
    }
    for name, (args, message) in cases.items():
        code, _, stderr = _cli(capsys, *args)
        assert code == 2, name
        assert stderr.count("\n") == 1 and message in stderr and "Traceback" not in stderr, (name, stderr)
        assert not out.exists() and _leftovers(tmp_path) == [], name

    monkeypatch.setattr(renderer_module, "MAX_AUDIO_SECONDS", 1.5)
    code, _, stderr = _cli(capsys, subject, "--audio", audio, "-o", out)
    assert code == 2 and "limit is 2 s" in stderr and stderr.count("\n") == 1, stderr
    assert not out.exists() and _leftovers(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_render_failing_midway_leaves_nothing_behind(renderer, tmp_path, monkeypatch, error):
    from talksplat.io.audio import save_wav
    from talksplat.render.renderer import default_workers, render_video

    audio = tmp_path / "speech.wav"
    save_wav(audio, _speechlike(1.0, seed=2))
    out = tmp_path / "out.mp4"
    out.write_bytes(b"an earlier result")
    real_render, calls = renderer.avatar.render, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:
            raise error("boom")
        return real_render(*args, **kwargs)

    monkeypatch.setattr(renderer.avatar, "render", failing)
    with pytest.raises(error):
        render_video(renderer, audio, out, RenderOptions(full_frame=True), progress=False)
    # it stopped there: only frames already in flight when the error came (one per worker) were started
    assert 6 <= len(calls) <= 6 + default_workers()
    assert out.read_bytes() == b"an earlier result"      # replaced only by a finished file
    assert _leftovers(tmp_path) == []
