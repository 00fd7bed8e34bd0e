"""UniGS specifics (the contract itself is checked by test_recipe_conformance.py): the region losses
look only at their regions, the backdrop is the plate, the initialisation is a cube and not the face,
the ablation switches change the model as documented, and MotionField's extension for it (no region
attention, extra conditions) leaves the attention path as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talksplat.core.labels import BACKDROP_FROM_FRAME, HAIR, HEAD_LABELS, INSIDE_MOUTH, LIPS, NECK, TORSO
from talksplat.engine.config import apply_overrides
from talksplat.engine.contract import Stage, View
from talksplat.engine.trainer import build_recipe
from talksplat.errors import TalksplatError
from talksplat.fields.hashgrid import HashGridConfig
from talksplat.fields.motion import MotionField, MotionFieldConfig
from talksplat.recipes.unigs import (
    EYE_COLUMNS,
    PatchLossConfig,
    UniGS,
    cube_points,
    init_cube,
    patch_corners,
    patch_side,
    region_l1,
)

SMALL_GRID = HashGridConfig(num_levels=4, log2_hashmap_size=10, base_resolution=4, desired_resolution=32)
STATIC = Stage("static", 1, trains=("gaussians",))
DEFORM = Stage("deform", 1, trains=("gaussians", "networks"), deform=True)


def _recipe(tiny_subject, **overrides) -> UniGS:
    cfg = apply_overrides(UniGS.Config(), {**UniGS.test_overrides, **overrides})
    return build_recipe(UniGS, tiny_subject, cfg)


def _frame_with(recipe: UniGS, labels: tuple[int, ...]) -> int:
    """A training frame showing every one of ``labels``."""
    for t in recipe.data.train_frames:
        present = set(np.unique(recipe.data.labels(int(t)).numpy()).tolist())
        if set(labels) <= present:
            return int(t)
    pytest.skip(f"no frame of the tiny subject shows labels {labels}")


def _wake(field: MotionField) -> None:
    """Non-zero output layer (it starts at zero, the identity deformation)."""
    torch.manual_seed(3)
    with torch.no_grad():
        field.head[-1].weight.normal_(0, 0.1)
        field.head[-1].bias.normal_(0, 0.1)


# ------------------------------------------------------------------------------------ losses
def test_region_l1_looks_only_at_its_region():
    torch.manual_seed(0)
    target = torch.rand(16, 16, 3)
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[4:8, 4:8] = True
    image = target.clone()
    image[~mask] = 1 - image[~mask]          # wrong everywhere outside the region
    assert region_l1(image, target, mask) == 0
    image[5, 5, 0] += 0.48                    # one wrong value (one channel of one pixel) inside it
    assert region_l1(image, target, mask) == pytest.approx(0.48 / (16 * 3), rel=1e-5)
    assert region_l1(image, target, torch.zeros_like(mask)) == 0


def test_recipe_region_terms_see_only_their_labels(tiny_subject):
    recipe = _recipe(tiny_subject)
    t = _frame_with(recipe, (HAIR, TORSO))
    target, labels = recipe.data.image(t), recipe.data.labels(t)
    image = target.clone()
    image[labels == HAIR] = 1 - image[labels == HAIR]
    terms = recipe.losses({"image": image, "deformation": None}, _batch(t, target), DEFORM)
    assert terms["hair"] > 0.05
    assert terms["mouth"] == 0 and terms["torso"] == 0
    # Torso and neck count for the torso term, nothing else does.
    image = target.clone()
    region = torch.isin(labels, torch.tensor((TORSO, NECK)))
    image[region] = 1 - image[region]
    terms = recipe.losses({"image": image, "deformation": None}, _batch(t, target), DEFORM)
    assert terms["torso"] > 0.05 and terms["hair"] == 0 and terms["mouth"] == 0


def test_static_stage_is_l1_and_dssim_only(tiny_subject):
    recipe = _recipe(tiny_subject)
    t = int(recipe.data.train_frames[0])
    out = recipe(View(t), None, STATIC)
    assert set(recipe.losses(out, _batch(t, recipe.data.image(t)), STATIC)) == {"l1", "dssim"}
    out = recipe(View(t), recipe.training_conditions(t, DEFORM), DEFORM)
    terms = recipe.losses(out, _batch(t, recipe.data.image(t)), DEFORM)
    assert set(terms) == {"l1", "dssim", "mouth", "hair", "torso", "motion_reg", "patch_perceptual", "mouth_box",
                          "eye_box"}
    assert set(terms) == {name for name, weight in recipe.loss_weights().items() if weight > 0}


def _assert_deform_term(tiny_subject, recipe: UniGS, name: str, t: int, image, target, expected: float) -> None:
    """Loss term ``name`` is positive and equals ``expected`` in the deform stage, is absent from the
    static stage, and a weight of 0 switches it off."""
    outputs, batch = {"image": image, "deformation": None}, _batch(t, target)
    terms = recipe.losses(outputs, batch, DEFORM)
    assert terms[name] > 0
    assert terms[name] == pytest.approx(expected)
    assert name not in recipe.losses(outputs, batch, STATIC)
    paper = _recipe(tiny_subject, **{f"losses.{name}": 0.0})
    assert name not in paper.losses(outputs, batch, DEFORM)


def test_mouth_box_term_is_the_padded_lips_box_l1_and_zero_switches_it_off(tiny_subject):
    from talksplat.engine.losses import mouth_box_l1

    t = _frame_with(_recipe(tiny_subject), (LIPS,))
    recipe = _recipe(tiny_subject, **{"losses.mouth_box": 2.0})
    target, labels = recipe.data.image(t), recipe.data.labels(t)
    image = target.clone()
    image[labels == LIPS] = 1 - image[labels == LIPS]
    _assert_deform_term(tiny_subject, recipe, "mouth_box", t, image, target, float(mouth_box_l1(image, target, labels)))


def test_eye_box_term_is_the_shared_eye_box_l1_and_zero_switches_it_off(tiny_subject):
    from talksplat.engine.losses import eye_box_l1, eye_boxes

    recipe = _recipe(tiny_subject)
    t = int(recipe.data.train_frames[0])
    target, landmarks = recipe.data.image(t), recipe.data.landmarks_px(t)
    image = target.clone()
    rows, cols = eye_boxes(landmarks, *image.shape[:2])[0]
    image[rows, cols] = 1 - image[rows, cols]          # only the first eye box differs
    _assert_deform_term(tiny_subject, recipe, "eye_box", t, image, target, float(eye_box_l1(image, target, landmarks)))


def test_patch_positions_come_from_the_recipes_generator_and_lie_on_the_portrait():
    labels = torch.zeros(64, 64, dtype=torch.long)
    labels[40:60, 10:30] = TORSO
    cfg = PatchLossConfig(patches=50)
    side = patch_side(64, cfg)
    a = patch_corners(labels, cfg, np.random.default_rng(5))
    b = patch_corners(labels, cfg, np.random.default_rng(5))
    assert a == b and len(a) == 50
    for y, x in a:
        assert 0 <= y <= 64 - side and 0 <= x <= 64 - side
        # the patch overlaps the portrait (its centre was drawn there)
        assert labels[y:y + side, x:x + side].any()
    assert patch_corners(labels, cfg, np.random.default_rng(6)) != a


def test_motion_regularisation_is_zero_for_the_identity_deformation(tiny_subject):
    recipe = _recipe(tiny_subject)
    t = int(recipe.data.train_frames[0])
    out = recipe(View(t), recipe.training_conditions(t, DEFORM), DEFORM)
    assert recipe.losses(out, _batch(t, recipe.data.image(t)), DEFORM)["motion_reg"] == 0
    _wake(recipe.deformation)
    out = recipe(View(t), recipe.training_conditions(t, DEFORM), DEFORM)
    assert recipe.losses(out, _batch(t, recipe.data.image(t)), DEFORM)["motion_reg"] > 0


def _batch(t, image):
    from talksplat.engine.contract import Batch

    return Batch(frame=t, image=image)


# ------------------------------------------------------------------------------------ backdrop
def test_backdrop_is_the_plate_never_the_frames_torso(tiny_subject):
    recipe = _recipe(tiny_subject)
    t = _frame_with(recipe, BACKDROP_FROM_FRAME)
    with torch.no_grad():
        recipe.sets["portrait"].params["opacity_logits"].fill_(-30.0)   # nothing drawn
        out = recipe(View(t), None)
    assert torch.allclose(out["image"], recipe.data.background, atol=1e-6)
    torso = torch.isin(recipe.data.labels(t), torch.tensor(BACKDROP_FROM_FRAME))
    # the frame's own backdrop would show its real torso there
    assert (recipe.data.backdrop(t)[torso] - out["image"][torso]).abs().max() > 0.05
    assert out["head"].abs().max() < 1e-6


# ------------------------------------------------------------------------------------ initialisation
def test_initialisation_fills_a_cube_around_the_subject_not_the_face(tiny_subject):
    recipe = _recipe(tiny_subject)
    data = recipe.data
    points, colors = cube_points(data, 4000, 1.0, np.random.default_rng(0))
    centre, side, t = init_cube(data, 1.0)
    w2c = data.w2c[t]
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    extent = cam.max(0).values - cam.min(0).values
    assert torch.all(extent > 0.97 * side) and torch.all(extent <= side * (1 + 1e-5))
    assert torch.allclose(cam.mean(0), centre, atol=0.03 * side)     # uniform: the mean is the centre
    # The cube is much larger than the head: only a small part of the points project onto head pixels.
    K, size = data.K, data.size
    u = (cam[:, 0] / cam[:, 2] * K[0, 0] + K[0, 2] - 0.5).round().long()
    v = (cam[:, 1] / cam[:, 2] * K[1, 1] + K[1, 2] - 0.5).round().long()
    inside = (u >= 0) & (u < size) & (v >= 0) & (v < size)
    head = torch.isin(data.labels(t), torch.tensor(HEAD_LABELS))
    on_head = head[v[inside], u[inside]].float().mean()
    # uniform in the cube: about the head's share of the image (seeded from the face it would be ~1)
    assert abs(on_head - head.float().mean()) < 0.15
    # Colours: the pixel each point projects to (points inside the image).
    image = data.image(t)
    assert torch.allclose(colors[inside], image[v[inside], u[inside]])
    # and the recipe's own set starts there (scales shrunk by init_scale)
    assert len(recipe.sets["portrait"]) == UniGS.test_overrides["init_points"]


# ------------------------------------------------------------------------------------ ablations
def test_hash_grid_ablation_changes_the_encoding(tiny_subject):
    default = _recipe(tiny_subject)
    assert default.deformation.encoding.output_dim == 3 * 12 * 2          # L = 12, F = 2
    assert default.deformation.audio_attention is None                     # plain concatenation
    small = _recipe(tiny_subject, **{"deformation.grid.num_levels": 8, "deformation.grid.features_per_level": 4})
    assert small.deformation.encoding.output_dim == 3 * 8 * 4
    assert small.deformation.head[0].in_features == 3 * 8 * 4 + 32 + 2 + 12


def test_attribute_ablation_changes_what_is_deformed(tiny_subject):
    recipe = _recipe(tiny_subject, **{"deformation.outputs": "position,opacity"})
    _wake(recipe.deformation)
    t = int(recipe.data.train_frames[0])
    d = recipe(View(t), recipe.conditions(t), DEFORM)["deformation"]
    assert d.d_means.abs().max() > 0 and d.d_opacity_logits.abs().max() > 0
    assert d.d_log_scales.abs().max() == 0 and d.d_quats.abs().max() == 0
    with pytest.raises(TalksplatError, match="deformation.outputs"):
        _recipe(tiny_subject, **{"deformation.outputs": "position,sparkle"})
    with pytest.raises(TalksplatError, match="extra_dim must be 12"):
        _recipe(tiny_subject, **{"deformation.extra_dim": 3})


def test_head_pose_of_the_view_conditions_the_deformation(tiny_subject):
    recipe = _recipe(tiny_subject)
    _wake(recipe.deformation)
    data = recipe.data
    a, b = (int(data.train_frames[0]), int(data.train_frames[-1]))
    conditions = recipe.conditions(a)
    d_a = recipe(View(a), conditions, DEFORM)["deformation"].d_means
    d_b = recipe(View(a, w2c=data.w2c[b]), conditions, DEFORM)["deformation"].d_means
    assert not torch.allclose(d_a, d_b)
    assert torch.allclose(recipe.pose_condition(data.w2c[torch.as_tensor(data.train_frames)]).mean(0),
                          torch.zeros(12), atol=1e-4)


def test_pose_noise_perturbs_the_training_pose_only_and_comes_from_the_recipes_generator(tiny_subject):
    plain = _recipe(tiny_subject)
    t = int(plain.data.train_frames[0])
    assert "pose_noise" not in plain.training_conditions(t, DEFORM)
    recipe = _recipe(tiny_subject, pose_noise=0.5)
    _wake(recipe.deformation)
    noisy = recipe.training_conditions(t, DEFORM)
    assert noisy["pose_noise"].shape == (12,) and noisy["pose_noise"].abs().max() > 0
    again = _recipe(tiny_subject, pose_noise=0.5)
    assert torch.equal(again.training_conditions(t, DEFORM)["pose_noise"], noisy["pose_noise"])
    assert "pose_noise" not in recipe.conditions(t)     # rendering sees the view's own pose
    clean = recipe(View(t), recipe.conditions(t), DEFORM)["deformation"].d_means
    assert not torch.allclose(recipe(View(t), noisy, DEFORM)["deformation"].d_means, clean)
    with pytest.raises(TalksplatError, match="pose_noise"):
        _recipe(tiny_subject, pose_noise=-1.0)


def test_standardised_eyes_are_centred_over_the_training_frames_and_saved_with_the_weights(tiny_subject):
    recipe = _recipe(tiny_subject)                              # the default
    data = recipe.data
    eyes = data.expressions[torch.as_tensor(data.train_frames)][:, list(EYE_COLUMNS)]
    fed = torch.stack([recipe.eye_condition(data.expressions[int(t)]) for t in data.train_frames])
    assert torch.allclose(fed.mean(0), torch.zeros(2), atol=1e-5)
    assert {"eye_mean", "eye_std"} <= set(recipe.state_dict())
    paper = _recipe(tiny_subject, standardise_eyes=False)       # the paper's raw coefficients
    assert torch.equal(paper.eye_condition(data.expressions[0]), data.expressions[0][list(EYE_COLUMNS)])
    assert "eye_mean" not in paper.state_dict()
    assert torch.allclose(recipe.eye_mean, eyes.mean(0))


def test_pose_free_region_hides_the_pose_from_the_gaussians_near_the_lips(tiny_subject):
    """`pose_free_radius_mm`: Gaussians within it of the template's lips deform the same whatever the
    view's pose; the others still follow the pose. Off (0) by default, where every Gaussian sees it."""
    from talksplat.recipes.parts import template_anchors

    assert UniGS.Config().pose_free_radius_mm == 25.0 and UniGS.Config().losses.mouth_box == 3.0
    assert _recipe(tiny_subject, pose_free_radius_mm=0.0).pose_gate(torch.zeros(3, 3)) is None
    radius = 50.0     # the tiny subject's random cube holds few points near the lips
    recipe = _recipe(tiny_subject, pose_free_radius_mm=radius)
    _wake(recipe.deformation)
    means = recipe.sets["portrait"].params["means"].detach()
    inside = torch.cdist(means, template_anchors(("lips",))).min(dim=1).values <= radius
    assert inside.sum() > 5 and (~inside).sum() > 5
    assert torch.equal(recipe.pose_gate(means), (~inside).float())
    moved_means = recipe.sets["portrait"].params["means"]
    with torch.no_grad():                 # an in-place update (an optimizer step) must refresh the gate
        moved_means.add_(1000.0)
    assert torch.equal(recipe.pose_gate(moved_means), torch.ones(len(moved_means)))
    with torch.no_grad():
        moved_means.sub_(1000.0)
    assert torch.equal(recipe.pose_gate(moved_means), (~inside).float())
    t = int(recipe.data.train_frames[0])
    conditions = recipe.conditions(t)
    w2c = recipe.data.w2c[t]
    moved = w2c.clone()
    moved[:3, 3] += torch.tensor([5.0, -3.0, 10.0])
    with torch.no_grad():
        here = recipe._deformed(conditions, w2c)[0]["means"]
        there = recipe._deformed(conditions, moved)[0]["means"]
    assert torch.allclose(here[inside], there[inside], atol=1e-5)
    assert (here[~inside] - there[~inside]).abs().max() > 1e-3


def test_incremental_sampling_switch_sets_the_deform_stage_sampler(tiny_subject):
    """Off (the paper): uniform sampling in both stages. On: TalkingGaussian's incremental sampler in
    the deform stage, with the recipe's window settings; its first draws are the least open frames."""
    from talksplat.data.samplers import IncrementalSampler, UniformSampler

    assert [s.sampler for s in _recipe(tiny_subject).stages()] == ["uniform", "uniform"]
    recipe = _recipe(tiny_subject, incremental_sampling=True, **{"sampling.window": 0.2})
    static, deform = recipe.stages()
    assert (static.sampler, deform.sampler) == ("uniform", "incremental")
    sampler = recipe.sampler(deform)
    assert isinstance(sampler, IncrementalSampler) and sampler.cfg.window == 0.2
    assert isinstance(recipe.sampler(static), UniformSampler)
    train = np.asarray(recipe.data.train_frames)
    least_open = set(train[np.argsort(recipe.data.lip_open[train], kind="stable")][:max(1, len(train) // 5)].tolist())
    assert sampler.sample(0, 0, 1000, np.random.default_rng(0)) in least_open


def test_a_checkpoint_config_without_the_pose_free_setting_loads_as_trained():
    """Runs written before the setting existed were trained with every Gaussian seeing the pose: their
    saved config (no key) must load with 0, not with today's default; a saved value is kept."""
    from talksplat.engine.config import config_from_saved, config_to_dict

    saved = config_to_dict(UniGS.Config())
    del saved["pose_free_radius_mm"]
    assert config_from_saved(UniGS.Config, saved).pose_free_radius_mm == 0.0
    assert config_from_saved(UniGS.Config, {**saved, "pose_free_radius_mm": 12.0}).pose_free_radius_mm == 12.0
    assert "absent_in_older_checkpoints" not in saved


@pytest.mark.parametrize("override", [{"pose_free_radius_mm": -1.0}, {"pose_free_regions": "nose"}])
def test_pose_free_region_settings_are_checked(tiny_subject, override):
    with pytest.raises(TalksplatError, match="pose_free"):
        _recipe(tiny_subject, **override)


# ------------------------------------------------------------------------------------ MotionField extension
def _field(**kw) -> MotionField:
    return MotionField(MotionFieldConfig(grid=SMALL_GRID, **kw), torch.tensor([-0.1, -0.1, 1.9]),
                       torch.tensor([0.1, 0.1, 2.1]))


def test_motion_field_default_keeps_region_attention():
    field = _field()
    assert field.audio_attention is not None and field.expression_attention is not None
    assert field.head[0].in_features == field.encoding.output_dim + 32 + 7
    assert set(field.region_attention(torch.zeros(4, 3) + torch.tensor([0.0, 0.0, 2.0]))) == {"audio", "expression"}


def test_motion_field_without_attention_with_extra_conditions():
    torch.manual_seed(0)
    field = _field(region_attention=False, expression_dim=2, extra_dim=5)
    assert field.audio_attention is None and field.expression_attention is None
    assert field.head[0].in_features == field.encoding.output_dim + 32 + 2 + 5
    assert field.region_attention(torch.zeros(3, 3)) == {}
    means = torch.rand(50, 3) * 0.2 + torch.tensor([-0.1, -0.1, 1.9])
    audio, eyes, extra = torch.randn(32), torch.rand(2), torch.randn(5)
    with pytest.raises(ValueError, match="extra condition"):
        field(means, audio, eyes)
    _wake(field)
    trained = field(means, audio, eyes, extra)
    assert not torch.allclose(trained.d_means, field(means, audio, eyes, extra + 1).d_means)
    field.eval()
    with torch.no_grad():
        cached = field(means, audio, eyes, extra)      # inference path: cached static part
    for name in ("d_means", "d_log_scales", "d_quats"):
        assert torch.allclose(getattr(cached, name), getattr(trained, name), atol=1e-5), name


def test_motion_field_attention_path_cached_equals_training_path():
    torch.manual_seed(1)
    field = _field()
    _wake(field)
    means = torch.rand(40, 3) * 0.2 + torch.tensor([-0.1, -0.1, 1.9])
    audio, expr = torch.randn(32), torch.rand(7)
    trained = field(means, audio, expr)
    field.eval()
    with torch.no_grad():
        cached = field(means, audio, expr)
    assert torch.allclose(cached.d_means, trained.d_means, atol=1e-5)


def test_labels_of_the_regions_are_the_documented_ones():
    from talksplat.recipes.unigs import REGIONS

    assert REGIONS == {"mouth": (LIPS, INSIDE_MOUTH), "hair": (HAIR,), "torso": (TORSO, NECK)}
