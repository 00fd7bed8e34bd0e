"""The lid rig (issue #20): face Gaussians near the eyes follow the tracked lid landmarks' motion,
fitted per eye as linear in that eye's blink coefficient, before the motion field adds the rest."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def _tracked_error(data, rig, frames, moved: bool) -> float:
    from talksplat.core.pixels import RASTER_PIXEL_CENTRE
    from talksplat.gaussians.rasterize import project_points
    from talksplat.recipes.parts import LID_RIG_EYES

    points = [p for eye, _ in LID_RIG_EYES for p in eye]
    errors = []
    for t in map(int, frames):
        anchors = rig.anchors + (rig.anchor_displacements(data.expressions[t]) if moved else 0.0)
        tracked = data.landmarks_px(t)[points] + RASTER_PIXEL_CENTRE
        errors.append(np.abs(project_points(anchors, data.w2c[t], data.K)[0].numpy() - tracked).mean())
    return float(np.mean(errors))


def test_lid_rig_follows_the_tracked_lids_with_each_eyes_own_blink(tiny_subject):
    """Fitted on the synthetic clip, the rig's eye landmarks moved by each training frame's blink
    coefficients land nearer the tracked ones on the frames with the eyes shut than the still anchors
    do; each eye reads its own coefficient only."""
    from talksplat.data.subject import load_subject_data
    from talksplat.recipes.parts import LID_RIG_EYES, lid_rig

    data = load_subject_data(tiny_subject, 64)
    rig = lid_rig(data, 1.0, 4.0)
    (right, right_column), (left, left_column) = LID_RIG_EYES
    assert rig.basis.shape == (data.expressions.shape[1], len(right) + len(left), 3)
    assert torch.count_nonzero(rig.basis[right_column, len(right):]) == 0      # the right blink: right eye only
    assert torch.count_nonzero(rig.basis[left_column, :len(right)]) == 0       # the left blink: left eye only
    others = [c for c in range(rig.basis.shape[0]) if c not in (right_column, left_column)]
    assert torch.count_nonzero(rig.basis[others]) == 0                         # brows do not move the lids
    train = np.asarray(data.train_frames)
    shut = train[np.asarray(data.blink)[train] > 0.5]
    assert len(shut) > 0, "the synthetic clip blinks"
    assert _tracked_error(data, rig, shut, moved=True) < 0.7 * _tracked_error(data, rig, shut, moved=False)


def test_talkinggaussian_lid_rig_moves_the_lids_per_frame_and_survives_a_checkpoint(tiny_subject):
    from talksplat.data.subject import load_subject_data
    from talksplat.engine.contract import building_to_load_weights
    from talksplat.recipes.talkinggaussian import TalkingGaussian, TalkingGaussianConfig

    data = load_subject_data(tiny_subject, 64)
    cfg = TalkingGaussianConfig(size=64, face_points=3000, mouth_points=50, lid_rig=1.0)
    recipe = TalkingGaussian(data, cfg, np.random.default_rng(0))
    motion = recipe.stages()[1]
    blink = np.asarray(data.blink)[data.train_frames]
    shut_t, open_t = (int(data.train_frames[i]) for i in (np.argmax(blink), np.argmin(blink)))
    with torch.no_grad():
        means = {t: recipe._deformed("face", recipe.training_conditions(t, motion))["means"] for t in (open_t, shut_t)}
        mouth = {t: recipe._deformed("mouth", recipe.training_conditions(t, motion))["means"] for t in (open_t, shut_t)}
    moved = (means[open_t] - means[shut_t]).norm(dim=1)
    eyes = torch.cdist(recipe.sets["face"].params["means"], recipe.lid_rig.anchors).min(dim=1).values
    assert moved[eyes < 2.0].max() > 0.5                                 # the lids move with the blink (mm)
    assert moved[eyes > 30.0].max() < 1e-3                              # the chin does not
    assert torch.equal(mouth[open_t], mouth[shut_t])                     # nor the inside-mouth layer

    with building_to_load_weights():                                    # as a checkpoint is loaded
        loaded = TalkingGaussian(data, cfg, np.random.default_rng(1))
    networks = {k: v for k, v in recipe.state_dict().items() if not k.startswith("sets.")}
    missing, unexpected = loaded.load_state_dict(networks, strict=False)
    assert not unexpected and not [k for k in missing if not k.startswith("sets.")]
    assert {"lid_rig.anchors", "lid_rig.basis"} <= set(recipe.state_dict())
    points, expression = recipe.sets["face"].params["means"].detach(), data.expressions[shut_t]
    assert torch.equal(loaded.lid_rig(points, expression), recipe.lid_rig(points, expression))


def test_lid_rig_config_errors_are_one_line_and_older_runs_load_without_it():
    from talksplat.engine.config import apply_overrides, config_from_saved
    from talksplat.recipes.talkinggaussian import TalkingGaussianConfig

    for key, value in (("lid_rig", "-1"), ("lid_rig_sigma_mm", "0"), ("lid_rig_reach_mm", "-2")):
        with pytest.raises(ValueError, match="lid_rig must be >= 0"):
            apply_overrides(TalkingGaussianConfig(), {key: value}).validate()
    assert config_from_saved(TalkingGaussianConfig, {"size": 64}).lid_rig == 0.0
    assert config_from_saved(TalkingGaussianConfig, {"size": 64, "lid_rig": 1.0}).lid_rig == 1.0
