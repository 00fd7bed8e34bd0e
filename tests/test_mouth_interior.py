"""The mouth-opening alpha term (issue #20): TalkingGaussian's face layer is pushed off the pixels
the frame shows as inside the mouth, so the inside-mouth layer (teeth, tongue) can show there."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talksplat.core.labels import INSIDE_MOUTH, LIPS, SKIN
from talksplat.engine.losses import label_alpha


def test_label_alpha_averages_only_the_labelled_pixels():
    labels = torch.full((8, 8), SKIN)
    labels[3:5, 2:6] = INSIDE_MOUTH
    labels[2, 2:6] = LIPS
    alpha = torch.zeros(8, 8, 1)
    alpha[2] = 1.0                                    # the lips: covered, not penalised
    assert label_alpha(alpha, labels, INSIDE_MOUTH).item() == 0.0
    alpha[3, 2:6] = 1.0                               # half the opening covered
    assert label_alpha(alpha, labels, INSIDE_MOUTH).item() == 0.5
    assert label_alpha(alpha, torch.full((8, 8), SKIN), INSIDE_MOUTH).item() == 0.0   # mouth shut


def test_talkinggaussian_pushes_only_its_face_layer_off_the_mouth_opening(tiny_subject):
    from talksplat.data.subject import load_subject_data
    from talksplat.engine.contract import Batch, View
    from talksplat.recipes.talkinggaussian import TalkingGaussian, TalkingGaussianConfig

    data = load_subject_data(tiny_subject, 64)
    cfg = TalkingGaussianConfig(size=64, face_points=300, mouth_points=50)
    cfg.losses.mouth_face_alpha = 1.0
    recipe = TalkingGaussian(data, cfg, np.random.default_rng(0))
    static, motion = recipe.stages()[:2]
    opening = [int((data.labels(int(t)) == INSIDE_MOUTH).sum()) for t in data.train_frames]
    t = int(data.train_frames[int(np.argmax(opening))])
    assert max(opening) > 0, "the synthetic clip opens its mouth"
    outputs = recipe.forward(View(t), recipe.training_conditions(t, motion), motion)
    batch = Batch(frame=t, image=data.image(t))
    assert "mouth_face_alpha" not in recipe.losses(outputs, batch, static)
    term = recipe.losses(outputs, batch, motion)["mouth_face_alpha"]
    assert 0.0 < term.item() <= 1.0
    term.backward()
    face_grad = recipe.sets["face"].params["opacity_logits"].grad
    assert face_grad is not None and face_grad.abs().sum() > 0
    assert recipe.sets["mouth"].params["opacity_logits"].grad is None     # the mouth layer is not pushed away
    cfg.losses.mouth_face_alpha = 0.0
    assert "mouth_face_alpha" not in recipe.losses(outputs, batch, motion)


def test_face_opacity_offsets_let_the_face_layer_fade_per_frame(tiny_subject):
    """`--set face_motion.outputs=position,scale,rotation,opacity` gives the face field a per-frame
    opacity offset: trained with the recipe's losses on an open and a shut frame, the face layer over
    the open frame's opening is more transparent under the open frame's conditions than under the
    shut frame's (same view), and the Gaussians' opacities differ between the two conditions."""
    from talksplat.data.subject import load_subject_data
    from talksplat.engine.config import apply_overrides
    from talksplat.engine.contract import Batch, View
    from talksplat.recipes.talkinggaussian import TalkingGaussian, TalkingGaussianConfig

    data = load_subject_data(tiny_subject, 64)
    cfg = apply_overrides(TalkingGaussianConfig(size=64, face_points=300, mouth_points=50),
                          {"face_motion.outputs": "position,scale,rotation,opacity", "losses.mouth_face_alpha": "1",
                           "lip_rig": "0"})     # the rig would part the lips per frame from the start
    assert cfg.face_motion.outputs == ("position", "scale", "rotation", "opacity")
    recipe = TalkingGaussian(data, cfg, np.random.default_rng(0))
    motion = recipe.stages()[1]
    opening = {int(t): int((data.labels(int(t)) == INSIDE_MOUTH).sum()) for t in data.train_frames}
    open_t, shut_t = max(opening, key=opening.get), min(opening, key=opening.get)
    assert opening[open_t] > 0 and opening[shut_t] == 0
    inside = data.labels(open_t) == INSIDE_MOUTH

    def face_alpha_over_opening(conditions_frame: int) -> float:
        with torch.no_grad():
            out = recipe.forward(View(open_t), recipe.training_conditions(conditions_frame, motion), motion)
        return out["face_alpha"].reshape(inside.shape)[inside].mean().item()

    assert face_alpha_over_opening(open_t) == face_alpha_over_opening(shut_t)   # identity field at the start
    # only the networks learn: the Gaussians (and their static opacities) stay as they are
    optimiser = torch.optim.Adam([p for g in recipe.network_param_groups() for p in g["params"]], lr=1e-2)
    weights = recipe.loss_weights()
    for step in range(30):
        t = (open_t, shut_t)[step % 2]
        optimiser.zero_grad()
        outputs = recipe.forward(View(t), recipe.training_conditions(t, motion), motion)
        terms = recipe.losses(outputs, Batch(frame=t, image=data.image(t)), motion)
        sum(weights[k] * v for k, v in terms.items()).backward()
        optimiser.step()
    faded, kept = face_alpha_over_opening(open_t), face_alpha_over_opening(shut_t)
    assert faded < kept - 0.02, (faded, kept)
    with torch.no_grad():   # the Gaussians' own opacities differ per frame (without the output: identical)
        opacities = [recipe._deformed("face", recipe.training_conditions(t, motion))["opacities"] for t in (open_t, shut_t)]
    assert (opacities[0] - opacities[1]).abs().max() > 0.01


def test_lips_term_asks_the_face_layer_to_draw_the_lips(tiny_subject):
    """`losses.lips_face_alpha`: the face layer's transparency over the pixels labelled lips, so the
    face layer keeps the lips in every frame (the counterpart of mouth_face_alpha)."""
    from talksplat.data.subject import load_subject_data
    from talksplat.engine.contract import Batch, View
    from talksplat.recipes.talkinggaussian import TalkingGaussian, TalkingGaussianConfig

    data = load_subject_data(tiny_subject, 64)
    cfg = TalkingGaussianConfig(size=64, face_points=300, mouth_points=50)
    cfg.losses.lips_face_alpha = 1.0
    recipe = TalkingGaussian(data, cfg, np.random.default_rng(0))
    motion = recipe.stages()[1]
    t = int(data.train_frames[0])
    lips = data.labels(t) == LIPS
    assert lips.any()
    outputs = recipe.forward(View(t), recipe.training_conditions(t, motion), motion)
    term = recipe.losses(outputs, Batch(frame=t, image=data.image(t)), motion)["lips_face_alpha"]
    expected = 1.0 - outputs["face_alpha"].reshape(lips.shape)[lips].mean()
    assert torch.isclose(term, expected) and 0.0 < term.item() < 1.0
    term.backward()
    face_grad = recipe.sets["face"].params["opacity_logits"].grad
    assert face_grad is not None and face_grad.sum() < 0            # more face opacity, smaller term
    assert recipe.sets["mouth"].params["opacity_logits"].grad is None
    cfg.losses.lips_face_alpha = 0.0
    assert "lips_face_alpha" not in recipe.losses(outputs, Batch(frame=t, image=data.image(t)), motion)


@pytest.mark.parametrize("region", ["lips", "eyes"])
def test_face_opacity_region_limits_the_offsets_to_the_region(tiny_subject, region):
    """`face_opacity_region_mm`: only face Gaussians near the template's landmarks of
    `face_opacity_regions` get the per-frame opacity offset; the rest keep their static opacity."""
    from talksplat.data.subject import load_subject_data
    from talksplat.recipes.parts import template_anchors
    from talksplat.recipes.talkinggaussian import TalkingGaussian, TalkingGaussianConfig

    data = load_subject_data(tiny_subject, 64)
    cfg = TalkingGaussianConfig(size=64, face_points=300, mouth_points=50, face_opacity_region_mm=12.0,
                                face_opacity_regions=(region,))
    cfg.face_motion.outputs = ("position", "scale", "rotation", "opacity")
    recipe = TalkingGaussian(data, cfg, np.random.default_rng(0))
    with torch.no_grad():
        recipe.face_motion.head[-1].bias[-1] = 2.0           # a visible offset for every Gaussian
        t = int(data.train_frames[0])
        opacities = recipe._deformed("face", recipe.training_conditions(t, recipe.stages()[1]))["opacities"]
    params = recipe.sets["face"].params
    static = torch.sigmoid(params["opacity_logits"]).reshape(-1)
    distance = torch.cdist(params["means"].detach(), template_anchors((region,))).min(dim=1).values
    near, far = distance <= 12.0, distance > 12.0
    assert near.sum() > 5 and far.sum() > 5
    assert torch.allclose(opacities.reshape(-1)[far], static[far])
    assert (opacities.reshape(-1)[near] > static[near] + 0.1).all()


def test_unknown_face_field_output_is_a_one_line_config_error():
    from talksplat.engine.config import apply_overrides
    from talksplat.recipes.talkinggaussian import TalkingGaussianConfig

    cfg = apply_overrides(TalkingGaussianConfig(), {"face_motion.outputs": "position,opacty"})
    with pytest.raises(ValueError, match=r"face_motion.outputs: unknown \['opacty'\]"):
        cfg.validate()
    cfg = apply_overrides(TalkingGaussianConfig(), {"face_opacity_region_mm": "-1"})
    with pytest.raises(ValueError, match="face_opacity_region_mm"):
        cfg.validate()
    cfg = apply_overrides(TalkingGaussianConfig(), {"face_opacity_regions": "eyes,ears"})
    with pytest.raises(ValueError, match=r"face_opacity_regions: unknown or none \['ears'\]"):
        cfg.validate()


def test_landmark_motion_term_is_zero_on_target_and_pulls_towards_it():
    from talksplat.engine.losses import anchor_weights, landmark_motion_l1
    from talksplat.gaussians.rasterize import project_points

    K = torch.tensor([[100.0, 0, 32], [0, 100.0, 32], [0, 0, 1]])
    w2c = torch.eye(4)
    w2c[2, 3] = 500.0                                           # 500 mm in front of the camera
    anchors = torch.tensor([[0.0, 10.0, 0.0], [5.0, 12.0, 0.0]])
    jaw_drop = torch.tensor([[0.0, 5.0, 0.0], [0.0, 5.0, 0.0]])
    target, _ = project_points(anchors + jaw_drop, w2c, K)
    assert landmark_motion_l1(jaw_drop, anchors, w2c, K, target).item() < 1e-5
    still = torch.zeros(2, 3, requires_grad=True)
    loss = landmark_motion_l1(still, anchors, w2c, K, target)
    assert abs(loss.item() - 0.5) < 1e-3                           # 1 px down on each: (0 + 1) / 2
    loss.backward()
    assert (still.grad[:, 1] < 0).all()                          # a step against it drops the anchors
    target[1] = float("nan")                                     # an untracked landmark is skipped
    assert abs(landmark_motion_l1(torch.zeros(2, 3), anchors, w2c, K, target).item() - 0.5) < 1e-3

    points = torch.tensor([[0.0, 10.0, 0.5], [0.0, 10.5, 0.0], [50.0, 0.0, 0.0]])
    weights = anchor_weights(points, anchors, radius=1.0)
    assert torch.allclose(weights[0], torch.tensor([0.5, 0.5, 0.0])) and weights[1].sum() == 0


def test_talkinggaussian_lip_landmark_term_reaches_the_face_motion_field(tiny_subject):
    from talksplat.data.subject import load_subject_data
    from talksplat.engine.contract import Batch, View
    from talksplat.recipes.talkinggaussian import TalkingGaussian, TalkingGaussianConfig

    data = load_subject_data(tiny_subject, 64)
    off = TalkingGaussian(data, TalkingGaussianConfig(size=64, face_points=300, mouth_points=50),
                          np.random.default_rng(0))
    static, motion = off.stages()[:2]
    t = int(data.train_frames[0])
    batch = Batch(frame=t, image=data.image(t))
    assert "lip_landmarks" not in off.losses(off.forward(View(t), off.training_conditions(t, motion), motion),
                                             batch, motion)          # off by default
    cfg = TalkingGaussianConfig(size=64, face_points=3000, mouth_points=50)
    cfg.losses.lip_landmarks = 1.0
    recipe = TalkingGaussian(data, cfg, np.random.default_rng(0))
    assert torch.isfinite(recipe.lip_offsets).all() and recipe.lip_offsets.shape == (40, 2)
    outputs = recipe.forward(View(t), recipe.training_conditions(t, motion), motion)
    assert "lip_landmarks" not in recipe.losses(outputs, batch, static)
    term = recipe.losses(outputs, batch, motion)["lip_landmarks"]
    recipe.face_motion.zero_grad()
    term.backward()
    assert recipe.face_motion.head[-1].weight.grad.abs().sum() > 0
