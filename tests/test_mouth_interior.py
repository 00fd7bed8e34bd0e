"""The mouth-opening alpha term (issue #20): TalkingGaussian's face layer is pushed off the pixels
the frame shows as inside the mouth, so the inside-mouth layer (teeth, tongue) can show there."""

from __future__ import annotations

import numpy as np
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
