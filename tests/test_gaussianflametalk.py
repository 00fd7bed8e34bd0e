"""GaussianFlameTalk specifics: the triangle binding (known answers), densified children keep their
parent's triangle, FlameTalk's causal mask, eq. 2's vertex loss, and the one-line error for a subject
without a fitted face model. The contract itself is tests/test_recipe_conformance.py's."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from talksplat.engine.config import apply_overrides
from talksplat.engine.contract import View
from talksplat.engine.trainer import build_recipe
from talksplat.errors import TalksplatError
from talksplat.gaussians._reference import quat_to_rotmat
from talksplat.gaussians.densify import duplicate, split
from talksplat.headmodel import load_head_model
from talksplat.recipes import RECIPES
from talksplat.recipes.gaussianflametalk import (
    RIGID,
    SET_NAME,
    FlameTalk,
    FlameTalkConfig,
    Frames,
    GaussianFlameTalk,
    axis_angle_to_matrix,
    bind,
    causal_bias_mask,
    matrix_to_quat,
    mouth_columns,
    mouth_gram,
    quat_multiply,
    triangle_frames,
    unbind_points,
    vertex_l2,
)


def _tiny(subject: Path) -> GaussianFlameTalk:
    cfg = apply_overrides(GaussianFlameTalk.Config(), GaussianFlameTalk.test_overrides)
    return build_recipe(GaussianFlameTalk, subject, cfg)


def _local(means: torch.Tensor, log_scale: float = math.log(0.5)) -> dict[str, torch.Tensor]:
    n = len(means)
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1.0
    return {"means": means, "quats": quats, "log_scales": torch.full((n, 3), log_scale),
            "opacity_logits": torch.zeros(n), "colors": torch.zeros(n, 3)}


# ------------------------------------------------------------------------------------------ binding
def test_triangle_frame_of_a_known_triangle():
    corners = torch.tensor([[[0.0, 0, 0], [2, 0, 0], [0, 2, 0]]])
    rotation, centroid, size = triangle_frames(corners)
    assert torch.allclose(rotation[0], torch.eye(3))                 # edge = x, in-plane y, normal z
    assert torch.allclose(centroid[0], torch.tensor([2 / 3, 2 / 3, 0]))
    assert torch.allclose(size[0], torch.tensor((2 + 2 + 2 * math.sqrt(2)) / 3))


def test_a_gaussian_follows_its_triangle_when_the_triangle_moves():
    """Known answer: move a triangle by a similarity (rotate 90 deg about z, scale 2, shift); the
    bound Gaussian's position must move by the same similarity, its scale double, its rotation turn."""
    rest = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]])
    turn = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    shift = torch.tensor([10.0, -3, 5])
    moved = 2.0 * rest @ turn.T + shift
    local = _local(torch.tensor([[0.2, 0.1, 0.5]]))
    _, _, rest_size = triangle_frames(rest)

    def posed(corners):
        rotation, origin, size = triangle_frames(corners)
        return bind(local, Frames(rotation, origin, size / rest_size))

    before, after = posed(rest), posed(moved)
    # At rest the frame is the identity placed at the centroid (1/3, 1/3, 0).
    assert torch.allclose(before["means"][0], torch.tensor([0.2 + 1 / 3, 0.1 + 1 / 3, 0.5]))
    assert torch.allclose(after["means"][0], 2.0 * turn @ before["means"][0] + shift, atol=1e-5)
    assert torch.allclose(after["scales"], 2.0 * before["scales"])
    assert torch.allclose(quat_to_rotmat(after["quats"])[0], turn @ quat_to_rotmat(before["quats"])[0], atol=1e-5)
    # A Gaussian bound to another triangle does not move.
    other = torch.tensor([[[5.0, 5, 5], [6, 5, 5], [5, 6, 5]]])
    both = triangle_frames(torch.cat([moved, other]))
    frames = Frames(both[0], both[1], both[2] / torch.cat([rest_size, rest_size]))
    pair = bind(_local(torch.tensor([[0.2, 0.1, 0.5], [0.2, 0.1, 0.5]])), frames)
    assert torch.allclose(pair["means"][1], torch.tensor([5.2 + 1 / 3, 5.1 + 1 / 3, 5.5]))


def test_unbind_inverts_bind_and_quaternions_match_matrices():
    torch.manual_seed(0)
    corners = torch.randn(50, 3, 3) * 10
    rotation, origin, size = triangle_frames(corners)
    frames = Frames(rotation, origin, size)
    points = torch.randn(50, 3) * 5
    local = _local(unbind_points(points, frames))
    assert torch.allclose(bind(local, frames)["means"], points, atol=1e-4)
    assert torch.allclose(quat_to_rotmat(matrix_to_quat(rotation)), rotation, atol=1e-5)
    # 180-degree turns (where a trace-based formula divides by ~0) survive.
    half_turns = axis_angle_to_matrix(torch.tensor([[math.pi, 0, 0], [0, math.pi, 0], [0, 0, math.pi]]))
    assert torch.allclose(quat_to_rotmat(matrix_to_quat(half_turns)), half_turns, atol=1e-4)
    a, b = matrix_to_quat(rotation[:2])
    assert torch.allclose(quat_to_rotmat(quat_multiply(a, b)[None])[0], rotation[0] @ rotation[1], atol=1e-5)


def test_gaussians_follow_the_mesh_of_the_recipe(tiny_subject):
    """In the recipe: opening the jaw moves a Gaussian bound to a jaw triangle with it (the offset is
    the triangle's centroid shift), leaves one bound to the forehead where it was, and a Gaussian
    bound rigidly to the head does not move with the expression."""
    recipe = _tiny(tiny_subject)
    model = recipe.model
    t = int(recipe.data.train_frames[0])
    neutral = torch.zeros(model.num_expressions)
    jaw = neutral.clone()
    jaw[model.expression_index("jawOpen")] = 1.0
    verts = recipe.mesh.model_vertices(neutral)
    moved = recipe.mesh.model_vertices(jaw)
    tri_motion = (moved[recipe.triangles] - verts[recipe.triangles]).norm(dim=-1).mean(-1)
    chin, still = int(tri_motion.argmax()), int(tri_motion.argmin())
    triangle = torch.tensor([chin, still, RIGID])
    local = _local(torch.zeros(3, 3))
    a = bind(local, recipe._gaussian_frames(triangle, t, neutral))["means"]
    b = bind(local, recipe._gaussian_frames(triangle, t, jaw))["means"]
    rotation, translation, scale = recipe.mesh.head_frame(t)
    centroid_shift = scale * (moved[recipe.triangles[chin]].mean(0) - verts[recipe.triangles[chin]].mean(0)) @ rotation.T
    assert float(tri_motion[chin]) > 5.0                                 # jawOpen moves the chin by mm
    assert torch.allclose(b[0] - a[0], centroid_shift, atol=1e-3)
    assert torch.allclose(b[1], a[1], atol=1e-4)
    assert torch.allclose(b[2], a[2]) and torch.allclose(a[2], translation)


def test_densified_children_keep_their_parents_triangle(tiny_subject):
    recipe = _tiny(tiny_subject)
    gaussians = recipe.sets[SET_NAME]
    n = len(gaussians)
    parents = gaussians.attrs["triangle"].clone()
    assert int((parents >= 0).sum()) > 0 and int((parents == RIGID).sum()) > 0   # both kinds seeded
    clone_mask = torch.zeros(n, dtype=torch.bool)
    clone_mask[:5] = True
    duplicate(gaussians.params, gaussians.optimizers, clone_mask, gaussians.attrs)
    assert torch.equal(gaussians.attrs["triangle"][n:], parents[:5])
    split_mask = torch.zeros(n + 5, dtype=torch.bool)
    split_mask[-3:] = True                   # split three of the clones
    split_mask[n - 1] = True                 # and the last seeded Gaussian (often rigid: hair)
    expected = torch.cat([parents[:5][-3:], parents[n - 1:n]])
    before = len(gaussians)
    split(gaussians.params, gaussians.optimizers, split_mask, attrs=gaussians.attrs)
    children = gaussians.attrs["triangle"][before - 4:]
    assert len(gaussians) == before + 4
    kept = torch.cat([parents, parents[:5]])[~split_mask]
    assert torch.equal(gaussians.attrs["triangle"][:before - 4], kept)
    # Children come in two blocks of the split parents' order (densify.split), each parent's triangle.
    assert sorted(children.tolist()) == sorted(torch.cat([expected, expected]).tolist())
    # Their world positions follow that triangle: rendering still works with the grown set.
    out = recipe(View(int(recipe.data.train_frames[0])), recipe.training_conditions(0, recipe.stages()[0]))
    assert out["image"].shape == (recipe.cfg.size, recipe.cfg.size, 3) and torch.isfinite(out["image"]).all()


# ------------------------------------------------------------------------------------------ FlameTalk
def _flametalk(cfg: FlameTalkConfig | None = None) -> FlameTalk:
    torch.manual_seed(0)
    model = FlameTalk(cfg or FlameTalkConfig(hidden=16, heads=2, layers=2, feedforward=32, context_frames=12,
                                             alignment_frames=3), (4, 5), 6, torch.randn(12))
    torch.nn.init.normal_(model.motion_decoder.weight)    # the zero init would hide every dependence
    return model.eval()


def test_flametalk_frame_t_ignores_audio_after_t():
    model = _flametalk()
    windows = torch.randn(1, 12, 4, 5)
    t = 6
    base = model(windows)[0]
    later = windows.clone()
    later[:, t + 1:] = torch.randn_like(later[:, t + 1:]) * 10
    changed = model(later)[0]
    assert torch.equal(changed[:t + 1], base[:t + 1])                  # frames up to t: bitwise the same
    assert not torch.allclose(changed[t + 1:], base[t + 1:])            # later frames do see it
    earlier = windows.clone()
    earlier[:, t - 5] += 3.0                                            # beyond the 3-frame alignment ...
    assert not torch.allclose(model(earlier)[0, t], base[t])            # ... still reaches t by self-attention


def test_causal_bias_mask_blocks_the_future_and_steps_per_period():
    mask = causal_bias_mask(6, period=2)
    assert torch.isinf(mask[0, 1:]).all() and not torch.isinf(mask.tril()).any()
    assert mask[5, 5] == 0 and mask[5, 4] == 0 and mask[5, 3] == -1 and mask[5, 0] == -2


def test_conditioner_declares_look_behind_only(tiny_subject):
    recipe = _tiny(tiny_subject)
    cond = recipe.conditioner()
    assert cond.look_ahead == 0
    assert cond.look_behind == recipe.cfg.flametalk.context_frames - 1
    windows = recipe.data.audio[:10]
    c = cond.conditions(windows, 5, 3, "video")["expression"]
    # Only the jaw/mouth columns come from audio: the rest is frame 3's own expression (smoothed in time).
    others = [i for i in range(recipe.model.num_expressions) if i not in recipe.mouth_columns]
    assert torch.equal(c[others], cond.source_expressions[3][others])
    future = windows.clone()
    future[6:] += 5.0
    assert torch.equal(cond.conditions(future, 5, 3, "video")["expression"], c)
    with pytest.raises(TalksplatError, match="expression must be one of"):
        cond.conditions(windows, 5, 3, "generated")


# ------------------------------------------------------------------------------------------ eq. 2
def test_vertex_loss_is_zero_for_the_ground_truth_and_equals_the_vertex_distance():
    model = load_head_model()
    columns = mouth_columns(model)
    names = [model.expression_names[i] for i in columns]
    assert "jawOpen" in names and "mouthClose" in names and not any(n.startswith("eye") for n in names)
    gram, n_vertices = mouth_gram(model, columns)
    rng = np.random.default_rng(0)
    target = torch.tensor(rng.uniform(0, 1, (4, len(columns))), dtype=torch.float32)
    assert float(vertex_l2(target, target, gram)) == 0.0
    pred = target.clone()
    pred[:, names.index("jawOpen")] += 0.1
    # The same in vertex space: meshes of pred and target (others neutral) over the mouth region.
    basis = torch.from_numpy(model.expression_basis[columns]).double()
    moved = basis.norm(dim=-1).amax(0) > 0.5
    b = basis[:, moved]
    direct = (torch.einsum("tk,kvc->tvc", (pred - target).double(), b).pow(2).sum(-1)).mean()
    assert b.shape[1] == n_vertices
    assert math.isclose(float(vertex_l2(pred, target, gram)), float(direct), rel_tol=1e-4)
    assert float(direct) > 0.1                                          # 0.1 jawOpen moves the chin by mm


# ------------------------------------------------------------------------------------------ errors
def test_subject_without_face_model_gets_a_one_line_error_naming_prepare(tiny_subject, tmp_path):
    copy = tmp_path / "s"
    shutil.copytree(tiny_subject, copy, ignore=shutil.ignore_patterns("runs", "face_model.npz"))
    cfg = apply_overrides(GaussianFlameTalk.Config(), GaussianFlameTalk.test_overrides)
    with pytest.raises(TalksplatError) as err:
        build_recipe(RECIPES["gaussianflametalk"], copy, cfg)
    message = str(err.value)
    assert "\n" not in message and "face_model" in message and "talksplat prepare" in message


def test_both_pose_sources_place_the_mesh_alike(tiny_subject):
    """The stabilised cameras (``world_from_model``, default) and the face model's own per-frame poses
    project each frame's mesh to the same pixels: the two conversions agree. (They may differ by
    millimetres along the viewing ray, which a face barely determines.)"""
    base = apply_overrides(GaussianFlameTalk.Config(), GaussianFlameTalk.test_overrides)
    camera = build_recipe(GaussianFlameTalk, tiny_subject, base)
    fit = build_recipe(GaussianFlameTalk, tiny_subject, apply_overrides(base, {"pose_source": "fit"}))
    face = torch.arange(*camera.model.regions["face"])
    K = camera.data.K

    def pixels(points, w2c):
        cam = points @ w2c[:3, :3].T + w2c[:3, 3]
        return cam[:, :2] / cam[:, 2:3] * torch.stack([K[0, 0], K[1, 1]]) + K[:2, 2]

    for t in (0, camera.data.n_frames // 2, camera.data.n_frames - 1):
        expression = camera.mesh.expression(t).detach()
        a = camera.mesh.world_vertices(t, expression)[face].detach()
        b = fit.mesh.world_vertices(t, expression)[face].detach()
        w2c = camera.data.w2c[t]
        gap_px = (pixels(a, w2c) - pixels(b, w2c)).norm(dim=-1)
        assert float(gap_px.mean()) < 0.5, (t, float(gap_px.mean()))     # at 64^2: under half a pixel
        spread_px = (pixels(a, w2c) - pixels(a, w2c).mean(0)).norm(dim=-1).mean()
        assert float(spread_px) > 5.0                                     # a real face, not a collapsed mesh
        assert float((a - b).norm(dim=-1).mean()) < 15.0
    with pytest.raises(TalksplatError, match="pose_source"):
        build_recipe(GaussianFlameTalk, tiny_subject, apply_overrides(base, {"pose_source": "wobbly"}))


def test_pose_corrections_pose_training_frames_only(tiny_subject):
    """A frame's learned pose correction moves the head in training renders; renders from conditions
    (self-reenactment, new audio) use the cameras alone unless render_pose_corrections is set."""
    recipe = _tiny(tiny_subject)
    t = int(recipe.data.train_frames[0])
    with torch.no_grad():
        recipe.mesh.rotation_offset[t] = torch.tensor([0.0, 0.1, 0.0])     # about 6 degrees of yaw
    expression = recipe.mesh.expression(t).detach()
    trained = recipe.training_conditions(t, recipe.stages()[0])
    with torch.no_grad():
        corrected = recipe(View(t), trained)["image"]
        plain = recipe(View(t), {"expression": expression})["image"]
        recipe.cfg.render_pose_corrections = True
        forced = recipe(View(t), {"expression": expression})["image"]
    assert not torch.allclose(corrected, plain, atol=1e-3)
    assert torch.equal(forced, corrected)


def test_render_expressions_are_smoothed_in_time_except_blinks(tiny_subject):
    recipe = _tiny(tiny_subject)
    mesh, names = recipe.mesh, recipe.model.expression_names
    blinks = [names.index("eyeBlink_L"), names.index("eyeBlink_R")]
    brow = names.index("browInnerUp_L")
    rng = np.random.default_rng(0)
    with torch.no_grad():                                   # a jittery track: white noise on every weight
        mesh.expression_offset.copy_(torch.as_tensor(rng.normal(0, 0.1, mesh.expression_offset.shape)))
    raw = (mesh.tracked + mesh.expression_offset).detach()
    assert torch.allclose(mesh.smoothed_expressions(0.0, blinks), raw)
    smooth = mesh.smoothed_expressions(2.0, blinks)
    jitter = lambda x: x.diff(dim=0).abs().mean()
    assert jitter(smooth[:, brow]) < 0.5 * jitter(raw[:, brow])
    assert torch.equal(smooth[:, blinks], raw[:, blinks])     # blinks stay as tracked
    assert torch.allclose(smooth.mean(0), raw.mean(0), atol=0.03)   # smoothing, not a shift
    wide = mesh.smoothed_expressions(float(len(raw)), blinks)          # a kernel wider than the clip
    assert wide.shape == raw.shape and jitter(wide[:, brow]) < jitter(smooth[:, brow])
    recipe.cfg.render_expression_sigma = 2.0
    assert torch.allclose(recipe.conditioner().source_expressions, smooth)


def test_linear_prior_predicts_the_ridge_map_until_the_decoder_learns_a_residual():
    model = _flametalk()
    torch.nn.init.zeros_(model.motion_decoder.weight)            # the untrained decoder adds nothing
    rng = np.random.default_rng(0)
    windows = torch.tensor(rng.normal(size=(200, 4, 5)), dtype=torch.float32)
    truth = torch.tensor(rng.normal(size=(20, 6)), dtype=torch.float32)
    targets = 0.3 + windows.reshape(200, -1) @ truth * 0.05           # linear in the audio window
    before = model(windows[None, :12])[0]
    assert torch.allclose(before, model.motion_decoder.bias.expand_as(before))   # the mean until fitted
    summary = model.fit_prior(windows, targets)
    assert float(model.motion_decoder.bias.detach().abs().max()) == 0.0     # the prior's bias holds the mean
    assert min(summary["cv_correlation"]) > 0.9
    with torch.no_grad():
        fitted = model(windows[None, 100:112])[0]
    assert float((fitted - targets[100:112]).abs().mean()) < 0.1 * float(targets[100:112].std())
    # the state (prior included) goes through a checkpoint's named tensors
    other = _flametalk()
    other.load_state_dict(model.state_dict())
    assert torch.equal(other(windows[None, 100:112]), model(windows[None, 100:112]))


def test_without_linear_prior_flametalk_has_no_prior_tensors():
    cfg = FlameTalkConfig(hidden=16, heads=2, layers=1, feedforward=16, linear_prior=False)
    model = FlameTalk(cfg, (4, 5), 6, torch.randn(12))
    assert not any(name.startswith("prior_") for name, _ in model.named_buffers())


def test_older_runs_load_without_the_linear_prior():
    from talksplat.engine.config import config_from_saved, config_to_dict

    saved = config_to_dict(GaussianFlameTalk.Config())
    del saved["flametalk"]["linear_prior"]
    assert config_from_saved(GaussianFlameTalk.Config, saved).flametalk.linear_prior is False
    assert GaussianFlameTalk.Config().flametalk.linear_prior is True
    saved["flametalk"]["linear_prior"] = True
    assert config_from_saved(GaussianFlameTalk.Config, saved).flametalk.linear_prior is True


def test_the_recipe_fits_the_prior_when_built_to_train_not_to_load(tiny_subject, monkeypatch):
    from talksplat.engine.contract import building_to_load_weights
    from talksplat.features import lipstate
    from talksplat.recipes import gaussianflametalk as gft

    monkeypatch.setattr(gft, "MIN_TRAIN_FRAMES", 4)        # the tiny subject is shorter than a real clip
    monkeypatch.setattr(lipstate, "MIN_TRAIN_FRAMES", 4)
    recipe = _tiny(tiny_subject)
    summary = recipe.summary_extras()["flametalk_linear_prior"]
    assert "ridge" in summary and float(recipe.flametalk.prior_weight.abs().max()) > 0
    with building_to_load_weights():
        loading = _tiny(tiny_subject)
    assert "flametalk_linear_prior" not in loading.summary_extras()   # the checkpoint brings the prior
    assert float(loading.flametalk.prior_weight.abs().max()) == 0
    monkeypatch.setattr(gft, "MIN_TRAIN_FRAMES", 10_000)
    assert "skipped" in _tiny(tiny_subject).summary_extras()["flametalk_linear_prior"]


def test_a_bad_prior_gain_is_refused():
    cfg = GaussianFlameTalk.Config()
    cfg.flametalk.linear_prior_max_gain = 0.5
    with pytest.raises(ValueError, match="linear_prior_max_gain"):
        cfg.validate()
