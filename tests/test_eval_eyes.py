"""Eye and mouth-interior measurements of ``talksplat eval``: blinks per minute and the EAR distribution
from FaceMesh tracked on a blinking synthetic clip, eye-region and mouth-interior masks, masked PSNR and
gradient energy on known images."""

from __future__ import annotations

import math

import numpy as np
import pytest

from talksplat.core.landmarks import INNER_LIPS, LEFT_EYE, RIGHT_EYE
from talksplat.eval import metrics as M
from talksplat.eval import signals as S
from talksplat.synthetic import SynthConfig, generate, load_ground_truth


@pytest.fixture(scope="module")
def blinking_clip(tmp_path_factory) -> tuple[np.ndarray, np.ndarray]:
    """An 8 s synthetic speaker at 128 px blinking every 1.5-3 s: its frames and the ground-truth eyelid
    closure (T,) (the larger of both eyes). ~4 s to make."""
    # Seed 1: 4 blinks, each read by FaceMesh (with seed 0 it reads one of 3 blinks as only a third closed:
    # the tracker, not the rule, misses it).
    cfg = SynthConfig(seconds=8, size=128, supersample=1, use_phones=False, masks=False, blink_interval=(1.5, 3.0),
                      seed=1)
    result = generate(cfg, tmp_path_factory.mktemp("blinker"))
    from talksplat.io.video import read_video

    gt = load_ground_truth(result.out_dir)
    return read_video(result.video), np.maximum(gt["blink_left"], gt["blink_right"])


def _true_blinks(closure: np.ndarray) -> int:
    """Blinks of the ground truth: runs of eyelid closure above one half."""
    shut = closure > 0.5
    return int(np.sum(shut[1:] & ~shut[:-1]) + shut[0])


def _freeze_blinks(frames: np.ndarray, closure: np.ndarray) -> np.ndarray:
    """The clip with every frame whose eyes are not fully open replaced by the last open frame: an avatar
    that never blinks."""
    out = np.array(frames)
    last_open = 0
    for t in range(len(out)):
        if closure[t] > 0.05:
            out[t] = out[last_open]
        else:
            last_open = t
    return out


def test_blinks_of_a_tracked_synthetic_clip_and_of_its_frozen_copy(blinking_clip):
    frames, closure = blinking_clip
    truth = _true_blinks(closure)
    assert truth == 4
    real = M.blink_statistics(S.eye_aspect_ratio(S.track_landmarks(frames, 256)))
    assert real["blinks"] == truth
    assert real["blinks_per_minute"] == pytest.approx(truth / (len(frames) / 25 / 60))
    assert real["ear_min"] < real["ear_p5"] < real["ear_median"]
    assert real["ear_min"] < real["closed_threshold"] == pytest.approx(M.BLINK_CLOSURE * real["ear_median"])
    frozen = M.blink_statistics(S.eye_aspect_ratio(S.track_landmarks(_freeze_blinks(frames, closure), 256)))
    assert frozen["blinks"] == 0 and frozen["blinks_per_minute"] == 0.0
    assert frozen["ear_p5"] > real["ear_p5"] + 0.05          # the acceptance test of issue #20 fails it
    assert frozen["ear_median"] == pytest.approx(real["ear_median"], abs=0.02)


def test_eye_aspect_ratio_of_landmarks_is_scale_free_and_nan_without_a_face():
    lms = np.zeros((3, 478, 3))
    for eye_corners, lids in (((33, 133), ((159, 145), (158, 153), (160, 144))),
                              ((263, 362), ((386, 374), (385, 380), (387, 373)))):
        lms[:, eye_corners[0], 0], lms[:, eye_corners[1], 0] = 0.0, 40.0      # 40 px wide
        for up, down in lids:
            lms[:, up, 1], lms[:, down, 1] = 0.0, [12.0, 4.0, 0.0]             # open, half, shut
    np.testing.assert_allclose(S.eye_aspect_ratio(lms), [0.3, 0.1, 0.0])
    np.testing.assert_allclose(S.eye_aspect_ratio(lms * 3.0), [0.3, 0.1, 0.0])
    lms[1] = np.nan
    ear = S.eye_aspect_ratio(lms)
    assert math.isnan(ear[1]) and ear[0] == pytest.approx(0.3)


def _landmarks_with_ear(openness: np.ndarray) -> np.ndarray:
    """(T, 478, 3) landmarks whose eyes are 40 px wide and ``openness`` x 40 px high (EAR = openness)."""
    lms = np.zeros((len(openness), 478, 3))
    for eye_corners, lids in (((33, 133), ((159, 145), (158, 153), (160, 144))),
                              ((263, 362), ((386, 374), (385, 380), (387, 373)))):
        lms[:, eye_corners[0], 0], lms[:, eye_corners[1], 0] = 0.0, 40.0
        for up, down in lids:
            lms[:, up, 1], lms[:, down, 1] = 0.0, 40.0 * openness
    return lms


def test_cross_driven_blinks_are_also_compared_with_the_replayed_source_frames():
    """A render that replays the first 100 frames of a 300-frame clip with 3 blinks there and 1 in
    the rest blinks 3 times: against the whole clip's rate it looks 2.25x too often, against the
    frames it replays it is exact."""
    from talksplat.eval.runner import _Clip, _eyes_summary

    real = np.full(300, 0.3)
    for start in (10, 40, 70, 200):
        real[start:start + 3] = 0.05
    replayed = np.arange(100)
    clip = _Clip(np.arange(100), _landmarks_with_ear(real[replayed]), _landmarks_with_ear(real),
                 np.zeros(0, np.float32), np.zeros(0, np.float32))
    eyes = _eyes_summary(clip, {}, replayed)
    assert eyes["ours"]["blinks"] == 3 and eyes["reference"]["blinks"] == 4
    assert eyes["blink_rate_ratio"] == pytest.approx((3 / 100) / (4 / 300))
    assert eyes["reference_replayed"]["blinks"] == 3 and eyes["blink_rate_ratio_replayed"] == pytest.approx(1.0)
    beyond = _eyes_summary(clip, {}, np.arange(200, 400))        # past the tracked reference: not scored
    assert "reference_replayed" not in beyond


def test_blink_runs_merge_flicker_and_skip_missing_faces():
    ear = np.full(100, 0.3)
    ear[10:13] = 0.05                     # one blink
    ear[40], ear[42] = 0.1, 0.1           # one blink read with a flicker open in between: merged
    ear[70], ear[80] = 0.1, 0.1           # two blinks 10 frames apart
    ear[90] = np.nan                      # no face: not a blink
    assert M.blink_runs(ear) == [(10, 12), (40, 42), (70, 70), (80, 80)]
    stats = M.blink_statistics(ear, fps=25)
    assert stats["blinks"] == 4 and stats["blinks_per_minute"] == pytest.approx(4 / (100 / 25 / 60))
    assert stats["ear_median"] == pytest.approx(0.3) and stats["ear_min"] == pytest.approx(0.05)
    assert stats["frames_with_face"] == 99
    nothing = M.blink_statistics(np.full(10, np.nan))
    assert nothing["blinks"] == 0 and nothing["blinks_per_minute"] is None and nothing["ear_p5"] is None


def test_masked_psnr_and_gradient_energy_of_known_images():
    a = np.full((20, 20, 3), 0.5)
    b = a.copy()
    b[:10] += 0.1                         # error only in the top half
    top = np.zeros((20, 20), bool)
    top[:10] = True
    assert M.masked_psnr(b, a, top) == pytest.approx(20.0)
    assert M.masked_psnr(b, a, ~top) == M.PSNR_CAP_DB
    assert math.isnan(M.masked_psnr(b, a, np.zeros((20, 20), bool)))
    inner = np.zeros((20, 20), bool)
    inner[5:15, 5:15] = True
    assert M.gradient_energy(a, inner) == pytest.approx(0.0)
    ramp = np.tile(np.linspace(0, 1, 20)[None, :, None], (20, 1, 3))     # 1/19 per pixel along x
    assert M.gradient_energy(ramp, inner) == pytest.approx((1 / 19) ** 2, rel=1e-6)
    check = np.zeros((20, 20, 3))
    check[::2, ::2] = check[1::2, 1::2] = 1.0
    faded = 0.5 + 0.1 * (check - 0.5)                                     # the same detail at 1/10 contrast
    assert M.gradient_energy(faded, inner) == pytest.approx(0.01 * M.gradient_energy(check, inner))
    assert math.isnan(M.gradient_energy(check, np.zeros((20, 20), bool)))


def test_teeth_share_counts_bright_pixels_inside_the_mask():
    mouth = np.zeros((10, 10), bool)
    mouth[2:8, 2:8] = True                                                # 36 pixels
    image = np.full((10, 10, 3), 0.2)                                     # a dark opening
    image[2:5, 2:8] = 0.9                                                 # an upper row of teeth: 18 pixels
    image[0, 0] = 1.0                                                     # bright, but outside the lips
    assert M.teeth_share(image, mouth) == pytest.approx(0.5)
    assert M.teeth_share((image * 255).astype(np.uint8), mouth) == pytest.approx(0.5)    # uint8 frames too
    assert M.teeth_share(image, mouth, luma_threshold=0.95) == 0.0
    assert math.isnan(M.teeth_share(image, np.zeros((10, 10), bool)))


def test_teeth_by_opening_compares_at_equal_opening_and_on_the_same_frames():
    """A render that shows teeth whenever it opens wide but opens at the wrong moments: equal at its
    own opening, short of the real frames on the real frames' most open moments."""
    rng = np.random.default_rng(0)
    open_ref = rng.uniform(0.0, 0.2, 200)
    teeth_ref = np.where(open_ref > 0.15, 0.5, 0.05)                      # teeth show once open past 0.15
    open_ours = rng.permutation(open_ref)                                 # the same openings, out of sync
    teeth_ours = np.where(open_ours > 0.15, 0.5, 0.05)
    out = M.teeth_by_opening(open_ours, teeth_ours, open_ref, teeth_ref, paired=True, percentiles=(50, 90))
    below, middle, top = out["bins"]
    assert below["opening_from"] is None and top["opening_to"] is None
    assert top["reference"] == pytest.approx(0.5) and top["reference_frames"] == 20
    assert top["ours_at_own_opening"] == pytest.approx(0.5)               # it shows teeth when it opens
    assert top["ours_on_reference_frames"] < 0.4                          # but not when the real mouth opens
    assert below["reference"] == pytest.approx(0.05) and 0.05 < middle["reference"] < 0.5
    open_ours[:] = np.nan                                                 # no face tracked in the render
    unpaired = M.teeth_by_opening(open_ours, teeth_ours, open_ref, teeth_ref)
    assert unpaired["bins"][-1]["ours_at_own_opening"] is None and unpaired["bins"][-1]["ours_frames"] == 0
    assert "ours_on_reference_frames" not in unpaired["bins"][-1]
    assert M.teeth_by_opening(open_ours, teeth_ours, np.full(5, np.nan), teeth_ref)["bins"] == []


def test_eye_and_mouth_masks_follow_the_landmarks():
    lms = np.zeros((478, 2))
    lms[list(RIGHT_EYE)] = [[20, 30], [40, 30], [30, 28], [30, 32]] * 4       # 20 px wide, centre (30, 30)
    lms[list(LEFT_EYE)] = [[60, 30], [80, 30], [70, 28], [70, 32]] * 4
    eyes = M.eye_region_mask(lms, (64, 100))
    rows, cols = np.nonzero(eyes)
    assert eyes[30, 30] and eyes[30, 70] and not eyes[30, 50] and not eyes[50, 30]
    assert rows.min() == pytest.approx(30 - M.EYE_BOX_HEIGHT * 10, abs=1)
    assert cols.min() == pytest.approx(30 - M.EYE_BOX_WIDTH * 10, abs=1)
    ring = np.linspace(0, 2 * np.pi, len(INNER_LIPS), endpoint=False)
    lms[list(INNER_LIPS)] = np.stack([50 + 10 * np.cos(ring), 45 + 5 * np.sin(ring)], axis=1)
    mouth = M.mouth_interior_mask(lms, (64, 100))
    assert mouth[45, 50] and not mouth[45, 62] and not mouth[52, 50]
    assert np.pi * 10 * 5 <= mouth.sum() <= np.pi * 11 * 6          # the ellipse, its boundary pixels included
    lms[INNER_LIPS[0]] = np.nan
    assert not M.mouth_interior_mask(lms, (64, 100)).any()
    lms[RIGHT_EYE[0]] = np.nan
    assert not M.eye_region_mask(lms, (64, 100)).any()


def _two_eyes() -> np.ndarray:
    """(478, 2) landmarks with a 20 px wide right eye centred at (30, 30) and a left eye at (70, 30)."""
    lms = np.full((478, 2), 50.0)
    lms[list(RIGHT_EYE)] = [[20, 30], [40, 30], [30, 28], [30, 32]] * 4
    lms[list(LEFT_EYE)] = [[60, 30], [80, 30], [70, 28], [70, 32]] * 4
    return lms


def test_the_eye_box_training_loss_sees_only_the_eyes():
    """The loss that makes TalkingGaussian learn blinks (issue #20) looks at the lids and nowhere else."""
    import torch

    from talksplat.engine.losses import eye_box_l1

    target = torch.zeros(64, 100, 3)
    lms = _two_eyes()
    far = target.clone()
    far[50:64, :] = 1.0                    # below the eyes (cheeks, mouth)
    lids = target.clone()
    lids[31:34, 25:36] = 1.0               # a lid closing over the right eye
    assert eye_box_l1(far, target, lms).item() == 0.0
    assert eye_box_l1(lids, target, lms).item() > 0.0
    nan = lms.copy()
    nan[RIGHT_EYE[3]] = np.nan
    assert eye_box_l1(lids, target, nan).item() == 0.0
    assert M.eye_region_mask(lms, (64, 100))[31:34, 25:36].all()     # eval scores the same region


def test_talkinggaussian_adds_the_eye_box_term_in_the_deforming_stages(tiny_subject):
    import torch

    from talksplat.data.subject import load_subject_data
    from talksplat.engine.contract import Batch, View
    from talksplat.recipes.talkinggaussian import TalkingGaussian, TalkingGaussianConfig

    data = load_subject_data(tiny_subject, 64)
    cfg = TalkingGaussianConfig(size=64, face_points=300, mouth_points=50)
    recipe = TalkingGaussian(data, cfg, np.random.default_rng(0))
    static, motion = recipe.stages()[:2]
    t = int(data.train_frames[0])
    with torch.no_grad():
        outputs = recipe.forward(View(t), recipe.training_conditions(t, motion))
    batch = Batch(frame=t, image=data.image(t))
    assert "eye_box" in recipe.losses(outputs, batch, motion) and "eye_box" not in recipe.losses(outputs, batch, static)
    # landmarks_px maps prepare's pixel centres (integers at the prepared size) to the training size.
    lm = data.landmarks_px(t)
    assert lm.shape == (478, 2)
    np.testing.assert_allclose(lm, (np.asarray(data.landmarks[t])[:, :2] + 0.5) * 64 / data.source_size - 0.5)


def test_eye_box_shut_gain_weighs_a_frame_by_its_blink(tiny_subject):
    """`eye_box_shut_gain`: a frame's eye-box term is (1 + gain x its blink coefficient) times the
    plain one, so shut-eye frames weigh more and open ones (blink 0) as before."""
    import pytest
    import torch

    from talksplat.data.subject import load_subject_data
    from talksplat.engine.contract import Batch, View
    from talksplat.recipes.talkinggaussian import TalkingGaussian, TalkingGaussianConfig

    data = load_subject_data(tiny_subject, 64)
    cfg = TalkingGaussianConfig(size=64, face_points=300, mouth_points=50)
    recipe = TalkingGaussian(data, cfg, np.random.default_rng(0))
    motion = recipe.stages()[1]
    t = int(data.train_frames[0])
    with torch.no_grad():
        outputs = recipe.forward(View(t), recipe.training_conditions(t, motion))
    batch = Batch(frame=t, image=data.image(t))
    data.blink = np.zeros_like(np.asarray(data.blink))
    plain = recipe.losses(outputs, batch, motion)["eye_box"]
    assert plain.item() > 0
    cfg.eye_box_shut_gain = 4.0
    assert recipe.losses(outputs, batch, motion)["eye_box"].item() == pytest.approx(plain.item())
    data.blink[t] = 0.5
    assert recipe.losses(outputs, batch, motion)["eye_box"].item() == pytest.approx(3.0 * plain.item())
    with pytest.raises(ValueError, match="eye_box_shut_gain"):
        TalkingGaussianConfig(eye_box_shut_gain=-1.0).validate()


def test_talkinggaussian_floors_the_shut_eye_share_of_rare_blinkers_only(tiny_subject):
    from talksplat.data.samplers import MinimumShareSampler, shut_eye_frames
    from talksplat.data.subject import load_subject_data
    from talksplat.engine.config import config_from_saved
    from talksplat.recipes.talkinggaussian import TalkingGaussian, TalkingGaussianConfig

    data = load_subject_data(tiny_subject, 64)
    train = np.asarray(data.train_frames)
    cfg = TalkingGaussianConfig(size=64, face_points=300, mouth_points=50)
    recipe = TalkingGaussian(data, cfg, np.random.default_rng(0))
    static, motion = recipe.stages()[:2]

    data.blink = np.zeros_like(np.asarray(data.blink))
    data.blink[train[:1]] = 1.0                      # one shut frame: a rare blinker
    assert len(shut_eye_frames(data)) / len(train) < cfg.rare_blinks
    assert isinstance(recipe.sampler(motion), MinimumShareSampler)
    assert not isinstance(recipe.sampler(static), MinimumShareSampler)     # deforming stages only

    data.blink[train[: int(np.ceil(cfg.rare_blinks * len(train)))]] = 1.0    # at the threshold: drawn as before
    share = len(shut_eye_frames(data)) / len(train)
    assert cfg.rare_blinks <= share < cfg.blink_share
    assert not isinstance(recipe.sampler(motion), MinimumShareSampler)
    cfg.rare_blinks = 1.0                            # 1 = every clip below the share (the old rule)
    assert recipe.sampler(motion).extra > 0

    with pytest.raises(ValueError, match="rare_blinks"):
        TalkingGaussianConfig(rare_blinks=0.0).validate()
    # A run saved before the rule floored every clip; one saved before the floor had none.
    floored = config_from_saved(TalkingGaussianConfig, {"size": 64, "blink_share": 0.04})
    assert (floored.blink_share, floored.rare_blinks) == (0.04, 1.0)
    assert config_from_saved(TalkingGaussianConfig, {"size": 64}).blink_share == 0.0


def test_eyes_audio_free_keeps_the_audio_code_off_the_lids(tiny_subject):
    """`eyes_audio_free_mm`: face Gaussians near the template's eyes deform the same under any audio
    code (the lids follow the expression alone); the others still follow the audio."""
    import pytest
    import torch

    from talksplat.data.subject import load_subject_data
    from talksplat.recipes.parts import template_anchors
    from talksplat.recipes.talkinggaussian import TalkingGaussian, TalkingGaussianConfig

    data = load_subject_data(tiny_subject, 64)
    cfg = TalkingGaussianConfig(size=64, face_points=300, mouth_points=50, eyes_audio_free_mm=12.0)
    recipe = TalkingGaussian(data, cfg, np.random.default_rng(0))
    with torch.no_grad():                       # the field starts at zero deformation: give it some
        torch.nn.init.normal_(recipe.face_motion.head[-1].weight, std=0.1)
    t = int(data.train_frames[0])
    conditions = recipe.training_conditions(t, recipe.stages()[1])
    louder = {**conditions, "audio_code": conditions["audio_code"] + 1.0}
    means = recipe.sets["face"].params["means"].detach()
    eyes = torch.cdist(means, template_anchors(("eyes",))).min(dim=1).values <= 12.0
    assert 5 < eyes.sum() < len(eyes) - 5
    for training in (True, False):              # the training path and the cached inference path
        recipe.train(training)
        with torch.set_grad_enabled(training):
            a = recipe._deformed("face", conditions)["means"].detach()
            b = recipe._deformed("face", louder)["means"].detach()
        assert torch.allclose(a[eyes], b[eyes])
        assert not torch.allclose(a[~eyes], b[~eyes])
    with pytest.raises(ValueError, match="eyes_audio_free_mm"):
        TalkingGaussianConfig(eyes_audio_free_mm=-1.0).validate()
    # On by default; a run saved before it heard the audio code everywhere and loads that way.
    from talksplat.engine.config import config_from_saved

    assert TalkingGaussianConfig().eyes_audio_free_mm > 0
    assert config_from_saved(TalkingGaussianConfig, {"size": 64}).eyes_audio_free_mm == 0.0
