"""talksplat.eval metrics: known answers on synthetic data (identical images, shifted landmarks, jitter, delays)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from talksplat.errors import TalksplatError
from talksplat.eval import metrics as M
from talksplat.eval import signals as S
from talksplat.features.audio import load_audio_16k
from talksplat.features.sync_offset import shift_audio
from talksplat.synthetic import SynthConfig, generate, load_ground_truth

FPS = 25


def _image(seed: int = 0, size: int = 64) -> np.ndarray:
    """A smooth-ish random RGB image in [0, 1] (blurred noise, so SSIM has structure to compare)."""
    rng = np.random.default_rng(seed)
    x = rng.random((size + 4, size + 4, 3))
    return (x[:-4, :-4] + x[2:-2, 2:-2] + x[4:, 4:]) / 3


# ---------------------------------------------------------------------------------------------- images


def test_identical_images_are_perfect():
    img = _image()
    assert M.psnr(img, img) == M.PSNR_CAP_DB == 100.0       # capped, not inf
    assert M.psnr(img, img, max_db=None) == math.inf
    assert M.ssim(img, img) == pytest.approx(1.0, abs=1e-12)
    assert M.ms_ssim(img, img) == pytest.approx(1.0, abs=1e-12)
    u8 = (img * 255).round().astype(np.uint8)
    assert M.psnr(u8, u8) == 100.0 and M.ssim(u8, torch.from_numpy(u8)) == pytest.approx(1.0)


def test_psnr_of_a_known_error():
    img = np.full((32, 32, 3), 0.5)
    assert M.psnr(img + 0.1, img) == pytest.approx(20.0)     # MSE 0.01 -> 20 dB
    assert M.psnr(img + 0.01, img) == pytest.approx(40.0)
    with pytest.raises(TalksplatError, match="shape"):
        M.psnr(img, img[:16])


def test_ssim_follows_the_paper_convention():
    a = _image(1)
    b = np.clip(a + 0.05 * np.random.default_rng(2).standard_normal(a.shape), 0, 1)
    reference = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                      data_range=1.0, channel_axis=2)
    assert M.ssim(a, b) == pytest.approx(reference, abs=1e-9)
    assert 0 < M.ms_ssim(a, b) < 1 and M.ms_ssim(a, b) > M.ssim(a, b)   # coarse scales agree more
    assert math.isnan(M.ssim(a[:8, :8], b[:8, :8]))


def test_ms_ssim_uses_fewer_scales_on_small_images():
    assert [M.ms_ssim_scales(s, s) for s in (512, 256, 176, 128, 64, 32, 11, 10)] == [5, 5, 5, 4, 3, 2, 1, 0]
    a = _image(3, 32)
    assert math.isnan(M.ms_ssim(a[:10, :10], a[:10, :10]))
    assert math.isnan(M.ms_ssim(a, a, scales=5))           # 32 px cannot hold 5 scales
    # One scale is plain SSIM.
    b = np.clip(a + 0.1, 0, 1)
    assert M.ms_ssim(a, b, scales=1) == pytest.approx(M.ssim(a, b))


# ---------------------------------------------------------------------------------------------- motion


def test_lmd_identical_and_shifted_by_two_pixels():
    rng = np.random.default_rng(0)
    lms = rng.uniform(0, 256, (20, 478, 3)).astype(np.float32)
    assert M.lmd(lms, lms) == 0.0
    shifted = lms.copy()
    shifted[..., 0] += 1.2                                   # a (1.2, 1.6) shift is 2 px long
    shifted[..., 1] += 1.6
    assert M.lmd(lms, shifted) == pytest.approx(2.0, abs=1e-5)
    assert M.lmd(lms, shifted, S.MOUTH_LANDMARKS) == pytest.approx(2.0, abs=1e-5)
    # Only the mouth moves: LMD over the 40 lip points is 2, over all 478 it is 2 * 40 / 478.
    mouth_only = lms.copy()
    mouth_only[:, list(S.MOUTH_LANDMARKS), 1] += 2.0
    assert M.lmd(lms, mouth_only, S.MOUTH_LANDMARKS) == pytest.approx(2.0, abs=1e-5)
    assert M.lmd(lms, mouth_only) == pytest.approx(2.0 * 40 / 478, abs=1e-5)
    # Frames without a face (NaN) are skipped, not counted as 0.
    holey = shifted.copy()
    holey[3] = np.nan
    assert np.isnan(M.lmd_per_frame(lms, holey)[3])
    assert M.lmd(lms, holey) == pytest.approx(2.0, abs=1e-5)
    assert math.isnan(M.lmd(lms[:1], holey[3:4]))


def test_expression_error_and_correlations():
    a = np.zeros((10, 7))
    b = np.zeros((10, 7))
    b[:, 2] = 0.7
    err = M.expression_error(a, b, [f"c{k}" for k in range(7)])
    assert err["mean"] == pytest.approx(0.1) and err["per_coefficient"]["c2"] == pytest.approx(0.7)
    b[4] = np.nan
    assert M.expression_error(a, b)["frames"] == 9
    t = np.arange(200)
    x = np.sin(t / 7.0) + 0.3 * np.sin(t / 2.3)
    assert M.pearson(x, 3 * x + 1) == pytest.approx(1.0)
    assert M.pearson(x, -x) == pytest.approx(-1.0)
    assert math.isnan(M.pearson(x, np.ones_like(x)))
    later = np.concatenate([np.zeros(4), x[:-4]])            # the same signal 4 frames later
    lag, r = M.lagged_correlation(x, later, max_lag=10)
    assert lag == 4 and r == pytest.approx(1.0)


def test_audio_envelope_of_a_tone_and_silence():
    sr = 16_000
    t = np.arange(sr) / sr
    tone = 0.5 * np.sin(2 * np.pi * 500 * t)                  # 500 Hz: whole periods in every 40 ms frame
    samples = np.concatenate([tone, np.zeros(sr // 2)])
    env = M.audio_envelope(samples, 40)
    assert env[:25] == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=1e-6)
    assert np.all(env[26:38] == -80.0)
    assert M.audio_envelope(samples[:100], 3)[1:].tolist() == [-80.0, -80.0]   # zero-padded


def test_lip_opening_and_nose_track_of_landmarks():
    lms = np.zeros((3, 478, 3))
    lms[:, 33, 0], lms[:, 263, 0] = 100.0, 160.0              # eye corners 60 px apart
    lms[:, 13, 1], lms[:, 14, 1] = 200.0, [200.0, 206.0, 212.0]
    np.testing.assert_allclose(S.lip_opening(lms), [0.0, 0.1, 0.2])
    lms[:, list(S.NOSE_LANDMARKS), 0] = [[10.0], [11.0], [12.0]]
    np.testing.assert_allclose(S.nose_track(lms)[:, 0], [10.0, 11.0, 12.0])
    assert S.inter_ocular_px(lms) == pytest.approx(60.0)


# ---------------------------------------------------------------------------------------------- stability


def _head_path(n: int = 250, seed: int = 0) -> np.ndarray:
    """A smooth (< 1 Hz) nose trajectory in pixels with a little tracking noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FPS
    path = np.stack([128 + 6 * np.sin(2 * np.pi * 0.3 * t), 140 + 3 * np.sin(2 * np.pi * 0.7 * t + 1)], axis=1)
    return path + 0.05 * rng.standard_normal(path.shape)


def test_stability_jitter_scores_higher_than_the_clean_video():
    clean = _head_path()
    t = np.arange(len(clean)) / FPS
    jitter = clean + 0.6 * np.stack([np.sin(2 * np.pi * 8 * t), np.cos(2 * np.pi * 8 * t + 0.5)], axis=1)
    ours, reference = M.stability_scores([jitter, clean])
    assert ours.score > reference.score
    for key in ("M_d", "V_m", "H_f"):
        assert ours.normalised[key] > reference.normalised[key]
        assert ours.raw[key] > reference.raw[key]
        assert ours.normalisers[key] == reference.normalisers[key]       # one scale for both videos
    assert ours.raw["H_f"] > 20 * reference.raw["H_f"]                   # 8 Hz is above the 5 Hz cutoff
    assert 0 <= reference.score < ours.score <= 1
    assert M.stability_score(jitter, clean).score == pytest.approx(ours.score)


def test_stability_of_equal_and_still_tracks():
    clean = _head_path()
    a, b = M.stability_scores([clean, clean.copy()])
    assert a.score == pytest.approx(b.score)
    still = np.full((50, 2), 64.0)
    (alone,) = M.stability_scores([still])
    assert alone.score == 0.0
    # Tracking gaps are interpolated; too few frames is a one-line error.
    holey = clean.copy()
    holey[10:13] = np.nan
    assert np.isfinite(M.stability_scores([holey])[0].score)
    with pytest.raises(TalksplatError, match="at least"):
        M.stability_components(clean[:5])


def test_trajectory_spectrum_peaks_at_the_jitter_frequency():
    t = np.arange(200) / FPS
    track = np.stack([100 + np.sin(2 * np.pi * 8 * t), np.full_like(t, 50.0)], axis=1)
    freqs, power = M.trajectory_spectrum(track)
    assert abs(freqs[np.argmax(power)] - 8.0) <= 25 / 200


# ---------------------------------------------------------------------------------------------- lip sync


@pytest.fixture(scope="module")
def speaking_clip(tmp_path_factory) -> tuple[np.ndarray, np.ndarray]:
    """A 14 s synthetic speaker (bundled speech; mouth in phase with the sound) at 64 px: the exact
    projected lip landmarks (T, 40, 2) and its 16 kHz audio. ~2 s to make."""
    cfg = SynthConfig(seconds=14, size=64, supersample=1, masks=False, use_phones=False, lead_frames=0.0)
    result = generate(cfg, tmp_path_factory.mktemp("speaker"))
    lips = load_ground_truth(result.out_dir)["landmarks_2d"][:, list(S.MOUTH_LANDMARKS)]
    return lips, load_audio_16k(result.audio)


def test_av_sync_reports_a_five_frame_audio_delay(speaking_clip):
    lips, audio = speaking_clip
    base = M.av_sync(lips, audio)
    delayed = M.av_sync(lips, shift_audio(audio, -5))        # the sound comes 5 frames (200 ms) late
    assert abs(base["offset_frames"]) <= 1 and base["reliable"]
    assert abs(delayed["offset_frames"] - 5) <= 1
    assert delayed["reliable"] and delayed["confidence"] > 0.05 and len(delayed["scores"]) == 31


def test_av_sync_of_short_or_faceless_clips_has_no_figures(speaking_clip):
    lips, audio = speaking_clip
    short = M.av_sync(lips[:30], audio[:30 * 640])
    assert short["offset_frames"] is None and not short["reliable"] and "short" in short["reason"]
    nothing = M.av_sync(np.full_like(lips, np.nan), audio)
    assert nothing["offset_frames"] is None and "not found" in nothing["reason"]


def test_mouth_opening_follows_the_envelope_of_its_own_audio(speaking_clip):
    lips, audio = speaking_clip
    opening = np.linalg.norm(lips[:, S.MOUTH_LANDMARKS.index(13)] - lips[:, S.MOUTH_LANDMARKS.index(14)], axis=1)
    envelope = M.audio_envelope(audio, len(lips))
    r = M.pearson(opening, envelope)
    assert r > 0.4
    assert M.pearson(opening, M.audio_envelope(shift_audio(audio, -25), len(lips))) < r - 0.2


# ---------------------------------------------------------------------------------------------- LPIPS


def test_lpips_with_local_weights(tmp_path):
    from talksplat.eval.lpips import ALEX_CHANNELS, alexnet_features, load_lpips

    torch.manual_seed(0)
    with pytest.raises(TalksplatError, match="no AlexNet backbone"):
        load_lpips(tmp_path)
    backbone = {f"features.{k}": v for k, v in alexnet_features().state_dict().items()}
    backbone["classifier.1.weight"] = torch.zeros(2, 2)   # torchvision files carry the classifier too
    torch.save(backbone, tmp_path / "alexnet-owt.pth")
    with pytest.raises(TalksplatError, match="no LPIPS linear layers"):
        load_lpips(tmp_path)
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(ALEX_CHANNELS)},
               tmp_path / "alex.pth")
    (tmp_path / "notes.pt").write_bytes(b"not a tensor file")
    model = load_lpips(tmp_path)
    a = _image(4, 48)                                       # < 64 px: upsampled internally
    b = np.clip(a + 0.2 * np.random.default_rng(5).standard_normal(a.shape), 0, 1)
    assert model.distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert model.distance(a, b) > 0
    with pytest.raises(TalksplatError, match="does not exist"):
        load_lpips(tmp_path / "missing")
