"""The lip rig (issue #20): Gaussians near the lips follow the lip landmarks' motion (tracked in
training, predicted from audio when rendering) before the motion fields add the rest."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talksplat.fields.landmark_rig import LandmarkRig, rig_weights


def test_rig_weights_follow_the_nearest_anchor_and_fade_with_distance():
    anchors = torch.tensor([[0.0, 0.0, 0.0], [0.0, 4.0, 0.0]])          # an upper and a lower lip point
    points = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.5, 0.0], [0.0, 2.0, 0.0], [0.0, -40.0, 0.0]])
    w = rig_weights(points, anchors, sigma=1.0, reach=8.0)
    assert w[0, 0] > 0.99 and w[0, 1] < 1e-3                           # on an anchor: follows it alone
    assert w[1, 0] > 0.85 and w[1, 0] > 5 * w[1, 1]                    # nearer the upper one: mostly it
    assert torch.isclose(w[2, 0], w[2, 1])                             # half-way: both alike
    assert w[3].sum() < 1e-3                                           # far from the lips: stays put
    with pytest.raises(ValueError, match="sigma"):
        rig_weights(points, anchors, sigma=0.0, reach=8.0)


def test_landmark_rig_moves_points_linearly_in_the_states():
    anchors = torch.tensor([[0.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    basis = torch.zeros(2, 2, 3)
    basis[0, 1, 1] = 3.0          # state 0 drops the lower anchor
    basis[1, 0, 0] = 1.0          # state 1 moves the upper one sideways
    rig = LandmarkRig(anchors, basis, sigma=1.0, reach=8.0)
    on_lower = torch.tensor([[0.0, 4.0, 0.0]])
    assert torch.allclose(rig(on_lower, torch.tensor([1.0, 0.0])), torch.tensor([[0.0, 3.0, 0.0]]), atol=1e-3)
    assert torch.allclose(rig(on_lower, torch.tensor([2.0, 5.0])), 2 * rig(on_lower, torch.tensor([1.0, 0.0])),
                          atol=1e-2)
    assert set(rig.state_dict()) == {"anchors", "basis"}                # saved with the checkpoint
    with pytest.raises(ValueError, match="anchors"):
        LandmarkRig(anchors, torch.zeros(2, 3, 3), 1.0, 8.0)


def test_landmark_rig_reuses_weights_only_for_unchanged_points_when_rendering():
    anchors = torch.tensor([[0.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    basis = torch.zeros(1, 2, 3)
    basis[0, 1, 1] = 3.0
    rig = LandmarkRig(anchors, basis, sigma=1.0, reach=8.0)
    points, state = torch.tensor([[0.0, 4.0, 0.0], [0.0, 40.0, 0.0]]), torch.tensor([1.0])
    with torch.no_grad():
        first = rig(points, state)
        assert torch.equal(rig(points, state), first) and rig._cached is not None
        points[1, 1] = 4.0                                  # moved in place: the weights are recomputed
        assert torch.allclose(rig(points, state)[1], first[0])
    rig(points, state)
    assert rig._cached is None                              # training: never cached


def test_lip_rig_reproduces_the_tracked_lip_landmarks(tiny_subject):
    """Fitted on the synthetic clip, the rig's lip landmarks, moved by each training frame's tracked
    lip state and projected, land on the tracked ones - far closer than the still anchors do."""
    from talksplat.core.landmarks import LIP_POINTS
    from talksplat.core.pixels import RASTER_PIXEL_CENTRE
    from talksplat.data.subject import load_subject_data
    from talksplat.features.lipstate import LipBasis
    from talksplat.gaussians.rasterize import project_points
    from talksplat.recipes.parts import lip_rig

    data = load_subject_data(tiny_subject, 64)
    train = data.train_frames
    basis = LipBasis.fit(data.lip_shapes[train], 4)
    states = torch.as_tensor(basis.coefficients(data.lip_shapes))
    rig = lip_rig(data, basis, 2.5, 8.0)
    moved, still = [], []
    for t in map(int, train):
        tracked = data.landmarks_px(t)[list(LIP_POINTS)] + RASTER_PIXEL_CENTRE
        for anchors, out in ((rig.anchors + rig.anchor_displacements(states[t]), moved), (rig.anchors, still)):
            out.append(np.abs(project_points(anchors, data.w2c[t], data.K)[0].numpy() - tracked).mean())
    assert np.mean(moved) < 0.5 * np.mean(still), (np.mean(moved), np.mean(still))


def test_talkinggaussian_lip_rig_moves_the_lips_per_frame_and_survives_a_checkpoint(tiny_subject):
    from talksplat.data.subject import load_subject_data
    from talksplat.engine.contract import building_to_load_weights
    from talksplat.recipes.talkinggaussian import TalkingGaussian, TalkingGaussianConfig

    data = load_subject_data(tiny_subject, 64)
    off = TalkingGaussian(data, TalkingGaussianConfig(size=64, face_points=300, mouth_points=50),
                          np.random.default_rng(0))
    assert off.lip_rig is None                                          # off by default
    cfg = TalkingGaussianConfig(size=64, face_points=3000, mouth_points=50, lip_rig=1.0)
    recipe = TalkingGaussian(data, cfg, np.random.default_rng(0))
    motion = recipe.stages()[1]
    opening = data.lip_open[data.train_frames]
    open_t = int(data.train_frames[int(np.argmax(opening))])
    shut_t = int(data.train_frames[int(np.argmin(opening))])
    with torch.no_grad():
        means = {t: recipe._deformed("face", recipe.training_conditions(t, motion))["means"] for t in (open_t, shut_t)}
        mouth = {t: recipe._deformed("mouth", recipe.training_conditions(t, motion))["means"] for t in (open_t, shut_t)}
    moved = (means[open_t] - means[shut_t]).norm(dim=1)
    lips = torch.cdist(recipe.sets["face"].params["means"], recipe.lip_rig.anchors).min(dim=1).values
    assert moved[lips < 3.0].mean() > 0.5                                # the lips move with the lip state (mm)
    assert moved[lips > 40.0].max() < 1e-3                               # the forehead does not
    assert torch.equal(mouth[open_t], mouth[shut_t])                     # the mouth layer is not rigged by default
    held_out = recipe.conditions(open_t)["lip_state"]                    # held out: predicted from audio
    new_audio = recipe.conditioner().conditions(data.audio, open_t, open_t, "video")["lip_state"]   # render, serve
    assert held_out.shape == (cfg.lip_state.lip_dims,) and torch.allclose(new_audio, held_out)

    with building_to_load_weights():                                    # as a checkpoint is loaded
        loaded = TalkingGaussian(data, cfg, np.random.default_rng(1))
    networks = {k: v for k, v in recipe.state_dict().items() if not k.startswith("sets.")}   # the sets load apart
    missing, unexpected = loaded.load_state_dict(networks, strict=False)
    assert not unexpected and not [k for k in missing if not k.startswith("sets.")]
    assert {"lip_rig.anchors", "lip_rig.basis"} <= set(recipe.state_dict())
    state = recipe.conditions(open_t)["lip_state"]
    points = recipe.sets["face"].params["means"].detach()
    assert torch.equal(loaded.lip_rig(points, state), recipe.lip_rig(points, state))


def test_lip_rig_config_errors_are_one_line():
    from talksplat.engine.config import apply_overrides
    from talksplat.recipes.talkinggaussian import TalkingGaussianConfig

    cfg = apply_overrides(TalkingGaussianConfig(), {"lip_rig": "1", "lip_rig_sets": "face,teeth"})
    with pytest.raises(ValueError, match=r"lip_rig_sets: unknown \['teeth'\]"):
        cfg.validate()
    cfg = apply_overrides(TalkingGaussianConfig(), {"lip_rig": "-1"})
    with pytest.raises(ValueError, match="lip_rig must be >= 0"):
        cfg.validate()


def test_talkinggaussian_motion_reg_holds_the_face_field_still(tiny_subject):
    """`losses.motion_reg` (UniGS's motion regularisation, shared in engine.losses): the face field's
    mean offset magnitude in the deforming stages; a step against it shrinks the offsets."""
    from talksplat.data.subject import load_subject_data
    from talksplat.engine.contract import Batch, View
    from talksplat.engine.losses import motion_magnitude
    from talksplat.recipes.talkinggaussian import TalkingGaussian, TalkingGaussianConfig

    data = load_subject_data(tiny_subject, 64)
    cfg = TalkingGaussianConfig(size=64, face_points=300, mouth_points=50)
    cfg.losses.motion_reg = 1.0
    recipe = TalkingGaussian(data, cfg, np.random.default_rng(0))
    static, motion = recipe.stages()[:2]
    t = int(data.train_frames[0])
    with torch.no_grad():
        recipe.face_motion.head[-1].bias.fill_(0.5)                        # a field that moves everything
    outputs = recipe.forward(View(t), recipe.training_conditions(t, motion), motion)
    batch = Batch(frame=t, image=data.image(t))
    assert "motion_reg" not in recipe.losses(recipe.forward(View(t), None, static), batch, static)
    term = recipe.losses(outputs, batch, motion)["motion_reg"]
    assert torch.isclose(term, motion_magnitude(outputs["face_deformation"])) and term.item() > 0
    term.backward()
    with torch.no_grad():
        recipe.face_motion.head[-1].bias -= 0.1 * recipe.face_motion.head[-1].bias.grad.sign()
        smaller = recipe.losses(recipe.forward(View(t), recipe.training_conditions(t, motion), motion), batch,
                                motion)["motion_reg"]
    assert smaller < term
    cfg.losses.motion_reg = 0.0
    assert "motion_reg" not in recipe.losses(recipe.forward(View(t), recipe.training_conditions(t, motion), motion),
                                             batch, motion)


def test_talkinggaussian_runs_saved_before_the_rig_load_without_it():
    """A run saved before the lip rig and motion_reg keeps training and rendering as it was trained."""
    from talksplat.engine.config import config_from_saved
    from talksplat.recipes.talkinggaussian import TalkingGaussianConfig

    older = config_from_saved(TalkingGaussianConfig, {"size": 64, "losses": {"l1": 0.8}})
    assert older.lip_rig == 0.0 and older.losses.motion_reg == 0.0
    newer = config_from_saved(TalkingGaussianConfig, {"size": 64, "lip_rig": 1.0, "losses": {"motion_reg": 1e-3}})
    assert newer.lip_rig == 1.0 and newer.losses.motion_reg == 1e-3
