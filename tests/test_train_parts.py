"""Losses and checkpoints shared by the recipes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
import torch

from talksplat.engine.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from talksplat.engine.losses import l1_dssim, psnr, ssim
from talksplat.errors import TalksplatError


def test_ssim_matches_scikit_image_convention():
    from skimage.metrics import structural_similarity

    gen = torch.Generator().manual_seed(0)
    a = torch.rand(40, 48, 3, generator=gen)
    b = (a + 0.1 * torch.randn(40, 48, 3, generator=gen)).clamp(0, 1)
    expected = structural_similarity(a.numpy(), b.numpy(), channel_axis=2, data_range=1.0,
                                     gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    # Border handling differs (reflect padding vs cropping), so allow a small gap.
    assert abs(ssim(a, b).item() - expected) < 0.02
    assert ssim(a, a).item() == pytest.approx(1.0, abs=1e-5)


def test_loss_is_zero_for_identical_images_and_psnr_is_infinite():
    a = torch.rand(16, 16, 3)
    assert l1_dssim(a, a).item() == pytest.approx(0.0, abs=1e-5)
    assert psnr(a, a) == float("inf")
    assert psnr(a, a * 0.5) < 20


@dataclass
class _Inner:
    width: int = 8
    sizes: tuple[int, ...] = (1, 2)


@dataclass
class _Config:
    lr: float = 0.1
    inner: _Inner = field(default_factory=_Inner)


def test_checkpoint_round_trip_and_rotation(tmp_path):
    tensors = {"means": torch.randn(10, 3), "colors": torch.rand(10, 3)}
    cfg = _Config(lr=0.5, inner=_Inner(width=16, sizes=(3, 4)))
    for step in (100, 200, 300):
        save_checkpoint(tmp_path, step, tensors, recipe="demo", config=cfg, progress={"psnr": 20.0})
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000200", "step-00000300"]
    loaded, loaded_cfg, meta = load_checkpoint(latest_checkpoint(tmp_path), recipe="demo", config_type=_Config)
    assert torch.equal(loaded["means"], tensors["means"])
    assert loaded_cfg == cfg
    assert meta["step"] == 300 and meta["progress"]["psnr"] == 20.0


def test_checkpoint_validation_errors_are_clear(tmp_path):
    path = save_checkpoint(tmp_path, 1, {"x": torch.zeros(2)}, recipe="demo", config=_Config())
    with pytest.raises(TalksplatError, match="pass --recipe demo"):
        load_checkpoint(path, recipe="other", config_type=_Config)
    meta = json.loads((path / "meta.json").read_text())
    meta["config"]["unexpected"] = 1
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(TalksplatError, match="unknown keys"):
        load_checkpoint(path, recipe="demo", config_type=_Config)
    del meta["config"]["unexpected"]
    (path / "meta.json").write_text(json.dumps(meta))
    (path / "tensors.safetensors").write_bytes(b"garbage")
    with pytest.raises(TalksplatError, match="damaged"):
        load_checkpoint(path, recipe="demo", config_type=_Config)


def test_half_written_checkpoints_are_ignored(tmp_path):
    save_checkpoint(tmp_path, 5, {"x": torch.zeros(2)}, recipe="demo", config=_Config())
    partial = tmp_path / "step-00000010"
    partial.mkdir()
    (partial / "tensors.safetensors").write_bytes(b"")  # meta.json never written: a killed save
    assert latest_checkpoint(tmp_path).name == "step-00000005"


def test_mouth_box_loss_looks_only_around_the_mouth():
    from talksplat.core.labels import INSIDE_MOUTH, LIPS
    from talksplat.engine.losses import mouth_box_l1 as _mouth_box_l1

    labels = torch.zeros(64, 64, dtype=torch.uint8)
    labels[40:44, 28:36] = LIPS
    labels[44:46, 30:34] = INSIDE_MOUTH
    target = torch.zeros(64, 64, 3)
    far_change = target.clone()
    far_change[0:10, 0:10] = 1.0
    mouth_change = target.clone()
    mouth_change[42:45, 30:34] = 1.0
    assert _mouth_box_l1(far_change, target, labels).item() == 0.0
    assert _mouth_box_l1(mouth_change, target, labels).item() > 0.0
    assert _mouth_box_l1(mouth_change, target, torch.zeros_like(labels)).item() == 0.0


def test_mouth_box_dssim_asks_for_the_teeth_edges_not_only_their_mean():
    """Inside the mouth box, a blur of a row of teeth keeps much of the L1 right but loses the SSIM."""
    from talksplat.core.labels import INSIDE_MOUTH, LIPS
    from talksplat.engine.losses import mouth_box_dssim, mouth_box_l1

    labels = torch.zeros(64, 64, dtype=torch.uint8)
    labels[36:48, 20:44] = LIPS
    labels[40:44, 22:42] = INSIDE_MOUTH
    target = torch.full((64, 64, 3), 0.2)
    target[40:42, 22:42:2] = 0.9                                          # teeth with gaps between them
    blurred = target.clone()
    blurred[40:42, 22:42] = target[40:42, 22:42].mean()                   # the same row, smeared
    assert mouth_box_dssim(target, target, labels).abs().item() < 1e-6
    assert mouth_box_dssim(blurred, target, labels).item() > 0.05
    far = target.clone()
    far[0:10, 0:10] = 1.0                                                 # outside the box: not seen
    assert mouth_box_dssim(far, target, labels).abs().item() < 1e-6
    assert mouth_box_dssim(blurred, target, torch.zeros_like(labels)).item() == 0.0
    assert mouth_box_l1(blurred, target, labels).item() > 0.0


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["config"].update(lr="fast"), "lr must be a number"),
    (lambda m: m["config"]["inner"].update(width=1.5), "inner.width must be an integer"),
    (lambda m: m.pop("config"), "field 'config' is missing"),
    (lambda m: m.update(step="12"), "field 'step' is missing or not a int"),
])
def test_damaged_meta_gives_one_line_errors(tmp_path, edit, message):
    path = save_checkpoint(tmp_path, 1, {"x": torch.zeros(2)}, recipe="demo", config=_Config())
    meta = json.loads((path / "meta.json").read_text())
    edit(meta)
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(TalksplatError, match=message):
        load_checkpoint(path, recipe="demo", config_type=_Config)


def test_meta_that_is_a_list_and_flipped_or_nan_tensors_are_refused(tmp_path):
    from safetensors.torch import save_file

    path = save_checkpoint(tmp_path, 1, {"x": torch.zeros(1000)}, recipe="demo", config=_Config())
    good_meta = (path / "meta.json").read_text()
    (path / "meta.json").write_text("[1, 2]")
    with pytest.raises(TalksplatError, match="not a checkpoint description"):
        load_checkpoint(path, recipe="demo", config_type=_Config)
    (path / "meta.json").write_text(good_meta)
    data = bytearray((path / "tensors.safetensors").read_bytes())
    data[-100:-96] = b"\xff\xff\xff\xff"                  # flipped bytes inside the weights
    (path / "tensors.safetensors").write_bytes(bytes(data))
    with pytest.raises(TalksplatError, match="damaged"):
        load_checkpoint(path, recipe="demo", config_type=_Config)
    nan = torch.zeros(1000)
    nan[::7] = float("nan")
    save_file({"x": nan}, str(path / "tensors.safetensors"))
    meta = json.loads(good_meta)
    meta["tensors_sha256"] = __import__("hashlib").sha256((path / "tensors.safetensors").read_bytes()).hexdigest()
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(TalksplatError, match="NaN"):
        load_checkpoint(path, recipe="demo", config_type=_Config)


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_with_a_warning(tmp_path):
    from talksplat.engine.checkpoint import load_latest_valid

    for step in (1, 2):
        save_checkpoint(tmp_path, step, {"x": torch.full((4,), float(step))}, recipe="demo", config=_Config())
    newest = latest_checkpoint(tmp_path)
    data = bytearray((newest / "tensors.safetensors").read_bytes())
    data[-4:] = b"\xff\xff\xff\x7f"
    (newest / "tensors.safetensors").write_bytes(bytes(data))
    warnings = []
    path, tensors, _, meta = load_latest_valid(tmp_path, recipe="demo", config_type=_Config, warn=warnings.append)
    assert meta["step"] == 1 and torch.equal(tensors["x"], torch.ones(4))
    assert len(warnings) == 1 and "damaged" in warnings[0]
    (path / "meta.json").write_text("{")
    with pytest.raises(TalksplatError, match="no older checkpoint .* loads; start over with --restart"):
        load_latest_valid(tmp_path, recipe="demo", config_type=_Config, warn=warnings.append)


def test_talkinggaussian_adds_the_mouth_box_dssim_term_only_when_weighted(tiny_subject):
    import numpy as np

    from talksplat.data.subject import load_subject_data
    from talksplat.engine.contract import Batch, View
    from talksplat.engine.losses import mouth_box_dssim
    from talksplat.recipes.talkinggaussian import TalkingGaussian, TalkingGaussianConfig

    data = load_subject_data(tiny_subject, 64)
    cfg = TalkingGaussianConfig(size=64, face_points=300, mouth_points=50)
    recipe = TalkingGaussian(data, cfg, np.random.default_rng(0))
    motion = recipe.stages()[1]
    t = int(data.train_frames[int(np.argmax(data.lip_open[data.train_frames]))])
    outputs = recipe.forward(View(t), recipe.training_conditions(t, motion), motion)
    batch = Batch(frame=t, image=data.image(t))
    assert "mouth_box_dssim" not in recipe.losses(outputs, batch, motion)          # off by default
    cfg.losses.mouth_box_dssim = 0.5
    term = recipe.losses(outputs, batch, motion)["mouth_box_dssim"]
    assert torch.isclose(term, mouth_box_dssim(outputs["image"], data.image(t), data.labels(t))) and term.item() > 0
    assert recipe.loss_weights()["mouth_box_dssim"] == 0.5
