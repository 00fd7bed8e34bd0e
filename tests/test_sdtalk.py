"""SDTalk (issue #17): the one-shot model, DDP pretraining (gloo, CPU) and the pretrain/oneshot commands.

Identities are synthetic: the session's tiny prepared subject and a recoloured copy of it (another
skin and backdrop tone; the project makes both). Sizes are tiny (``sdtalk.TEST_OVERRIDES``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from talksplat.cli.main import main
from talksplat.engine.config import apply_overrides, flatten
from talksplat.engine.distributed import CHECKPOINTS, LaunchSpec, launch, select_trainable
from talksplat.errors import UsageError
from talksplat.recipes import RECIPES, sdtalk
from talksplat.recipes import sdtalk_oneshot as one

BUNDLED_SPEECH = Path(sdtalk.__file__).resolve().parents[1] / "assets" / "audio" / "librispeech-198-209-0000.ogg"
DDP_STEPS = (2, 2)       # reconstruction, motion: K = 4 optimizer steps through both stages


def tiny_config(**extra) -> sdtalk.SDTalkConfig:
    return apply_overrides(sdtalk.SDTalkConfig(), {**sdtalk.TEST_OVERRIDES, **extra})


def cli_settings() -> list[str]:
    return [f"--set={k}={json.dumps(v)}" for k, v in sdtalk.TEST_OVERRIDES.items() if k != "batch_size"]


@pytest.fixture(scope="module")
def identities(tiny_subject, tmp_path_factory) -> Path:
    """A folder of two prepared identities: the tiny subject and a recoloured copy (channels rotated,
    darkened: a different skin, hair and backdrop tone with the same motion)."""
    parent = tmp_path_factory.mktemp("identities")
    shutil.copytree(tiny_subject, parent / "a", ignore=shutil.ignore_patterns("runs"))
    other = parent / "b"
    shutil.copytree(tiny_subject, other, ignore=shutil.ignore_patterns("runs"))
    frames = np.load(other / "frames.npy")
    np.save(other / "frames.npy", (frames[..., [2, 0, 1]].astype(np.float32) * 0.8).astype(np.uint8))
    return parent


def run_in_process(identities: Path, out: Path, batch: int, stop_after: int | None = None) -> dict:
    cfg = tiny_config(**{"batch_size": batch, "iterations.reconstruction": DDP_STEPS[0],
                         "iterations.motion": DDP_STEPS[1]})
    spec = LaunchSpec(build=sdtalk.build_job, subject_dirs=[str(identities)], config=cfg, recipe=sdtalk.NAME,
                      out_dir=str(out), batch_size=batch, checkpoint_every=cfg.checkpoint_every, quiet=True,
                      stop_after=stop_after)
    return launch(spec, 1)


def newest_tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    newest = max((model_dir / CHECKPOINTS).glob("step-*"))
    return load_file(str(newest / "tensors.safetensors"))


@pytest.fixture(scope="module")
def two_process_model(identities, tmp_path_factory) -> Path:
    """``talksplat pretrain --nproc 2`` with batch 1 per process through both stages."""
    out = tmp_path_factory.mktemp("ddp2") / "model"
    code = main(["pretrain", str(identities), "-o", str(out), "--nproc", "2", "--batch", "1", "--quiet",
                 "--iters", str(DDP_STEPS[0]), str(DDP_STEPS[1]), *cli_settings()])
    assert code == 0
    return out


# ----------------------------------------------------------------------------------- DDP
def test_two_processes_match_one_process_with_twice_the_batch(two_process_model, identities, tmp_path):
    summary = json.loads((two_process_model / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["backend"] == "gloo" and summary["global_batch"] == 2
    assert [s["name"] for s in summary["stages"]] == ["reconstruction", "motion"]
    run_in_process(identities, tmp_path / "one", batch=2)
    two, single = newest_tensors(two_process_model), newest_tensors(tmp_path / "one")
    weights = [k for k in single if k.startswith("modules/")]
    assert weights and set(two) == set(single)
    for key in weights:
        torch.testing.assert_close(two[key], single[key], rtol=1e-5, atol=1e-6, msg=key)
    # Both stages changed something: reconstruction weights and motion weights left their start.
    start = sdtalk.build_job([str(identities)], tiny_config()).model.state_dict()
    assert not torch.equal(start["renderer.net.0.weight"], single["modules/renderer.net.0.weight"])
    assert not torch.equal(start["fine.head.4.weight"], single["modules/fine.head.4.weight"])


def test_a_resumed_run_equals_an_uninterrupted_one(identities, tmp_path):
    run_in_process(identities, tmp_path / "straight", batch=1)
    run_in_process(identities, tmp_path / "killed", batch=1, stop_after=1)
    assert not (tmp_path / "killed" / "summary.json").exists()
    run_in_process(identities, tmp_path / "killed", batch=1)
    a, b = newest_tensors(tmp_path / "straight"), newest_tensors(tmp_path / "killed")
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_global_batch_is_a_function_of_the_step(identities):
    ids = sdtalk.load_identities([identities], tiny_config())
    first = sdtalk.global_batch(ids, 0, 7, 6)
    assert first == sdtalk.global_batch(ids, 0, 7, 6)
    assert first != sdtalk.global_batch(ids, 0, 8, 6)
    assert all(source != target for _, source, target in first)
    assert {identity for identity, _, _ in sdtalk.global_batch(ids, 0, 0, 40)} == {0, 1}


def test_samples_per_identity_counts_every_draw_of_the_sampler(identities, two_process_model):
    ids = sdtalk.load_identities([identities], tiny_config())
    counts = sdtalk.samples_per_identity(ids, 0, 30, 2)
    drawn = [identity for step in range(30) for identity, _, _ in sdtalk.global_batch(ids, 0, step, 2)]
    assert counts == [drawn.count(0), drawn.count(1)] and sum(counts) == 60
    summary = json.loads((two_process_model / "summary.json").read_text())
    assert [s["name"] for s in summary["identities"]] == ["a", "b"]
    assert sum(s["samples"] for s in summary["identities"]) == summary["steps"] * summary["global_batch"]


# ----------------------------------------------------------------------------------- the model
def test_dual_lifting_puts_unlifted_gaussians_on_the_plane_cells(identities):
    cfg = tiny_config()
    ids = sdtalk.load_identities([identities], cfg)
    source = ids.source_frame(0, 3)
    model = sdtalk.SDTalkModel(cfg)
    plane = cfg.size // cfg.plane_stride
    raw = torch.zeros(plane * plane, 2, sdtalk.LIFT_PARAMS + cfg.feature_dim)
    raw[..., 0] = -30.0                      # no lift: both Gaussians of a cell sit on the plane
    means = model._dual_lift(raw, source, plane)["means"]
    cam = means @ source.w2c[:3, :3].T + source.w2c[:3, 3]
    assert torch.allclose(cam[:, 2], source.w2c[2, 3] - cfg.plane_front_mm, atol=1e-2)
    u = cam[:, 0] / cam[:, 2] * source.K[0, 0] + source.K[0, 2]
    centres = (torch.arange(plane) + 0.5) * cfg.plane_stride
    assert torch.allclose(u.reshape(plane, plane, 2)[0, :, 0], centres, atol=1e-3)
    raw[..., 0] = 30.0                       # full lift: one in front of, one behind the plane
    lifted = model._dual_lift(raw, source, plane)["means"] @ source.w2c[:3, :3].T + source.w2c[:3, 3]
    depth = lifted[:, 2].reshape(-1, 2) - (source.w2c[2, 3] - cfg.plane_front_mm)
    assert torch.allclose(depth, torch.tensor([-cfg.lift_range_mm, cfg.lift_range_mm]).expand_as(depth), atol=1e-2)


def test_completion_branch_sits_on_the_fitted_mouth_and_eye_vertices(identities):
    from talksplat.headmodel import load_head_model

    cfg = tiny_config()
    completion, face = sdtalk.vertex_sets(cfg)
    head = load_head_model()
    allowed = np.concatenate([head.region(r) for r in sdtalk.COMPLETION_REGIONS])
    assert len(completion) == cfg.completion_points and np.isin(completion, allowed).all()
    assert len(face) == cfg.lifting_points
    source = sdtalk.load_identities([identities], cfg).source_frame(1, 0)
    lifted = sdtalk.SDTalkModel(cfg).lift(source)
    offsets = (lifted.completion["means"] - source.completion).norm(dim=-1)
    assert offsets.max() <= 2.0 * 3 ** 0.5 + 1e-4
    out = sdtalk.SDTalkModel(cfg).render(lifted, source.w2c, source.K)
    assert out["image"].shape == (cfg.size, cfg.size, 3) and out["features"].shape[-1] == cfg.feature_dim


def test_motion_stage_freezes_reconstruction(identities):
    cfg = tiny_config()
    job = sdtalk.build_job([str(identities)], cfg)
    select_trainable(job.model.param_groups(), job.stages[1])
    terms = job.model([job.make(item) for item in job.draw(0, 1)], "motion")
    sum(terms.values()).backward()
    assert set(terms) == {"l1", "perceptual_substitute", "lip"}
    assert job.model.renderer.net[0].weight.grad is None and job.model.encoder.net[0].weight.grad is None
    assert job.model.coarse.head[0].weight.grad is not None


def test_sdtalk_is_not_a_per_subject_recipe():
    assert sdtalk.NAME not in RECIPES
    assert "batch_size" in flatten(sdtalk.SDTalkConfig())


def test_dinov2_encoder_needs_a_local_folder(tmp_path):
    cfg = tiny_config(encoder=f"dinov2:{tmp_path / 'absent'}")
    with pytest.raises(UsageError):
        sdtalk.SDTalkModel(cfg)


# ----------------------------------------------------------------------------------- commands
def test_oneshot_renders_a_talking_video_from_one_image(two_process_model, identities, tmp_path, capsys):
    import cv2

    from talksplat.io.video import probe_video

    frame = np.load(identities / "b" / "frames.npy", mmap_mode="r")[0]
    image = tmp_path / "face.png"
    cv2.imwrite(str(image), np.ascontiguousarray(frame[..., ::-1]))
    from talksplat.io.audio import load_audio, save_wav

    speech = tmp_path / "speech.wav"          # one second of the bundled clip: 25 frames
    save_wav(speech, load_audio(BUNDLED_SPEECH)[:16000])
    out = tmp_path / "talking.mp4"
    code = main(["oneshot", str(image), "--audio", str(speech), "-o", str(out), "--model",
                 str(two_process_model), "--quiet"])
    assert code == 0, capsys.readouterr().err
    info = probe_video(out)
    summary = json.loads(out.with_suffix(".json").read_text())
    assert (info.width, info.height) == (tiny_config().size,) * 2
    assert summary["frames"] == info.num_frames == 25 and summary["checkpoint_step"] == sum(DDP_STEPS)
    assert summary["render_fps"] > 0


def test_still_pose_keeps_the_camera_and_a_driver_moves_it():
    source = torch.eye(4)
    source[2, 3] = 500.0
    assert torch.equal(one.driven_cameras(source, None, 3), source.expand(3, 4, 4))
    driver = torch.eye(4).repeat(2, 1, 1)
    driver[1, 0, 3] = 7.0
    moved = one.driven_cameras(source, driver, 3)
    assert moved[1, 0, 3] == 7.0 and torch.equal(moved[2], source)   # the driver loops


@pytest.mark.parametrize("argv, needle", [
    (["pretrain", "{missing}", "-o", "{tmp}/m"], "is not a folder"),
    (["pretrain", "{tmp}", "-o", "{tmp}/m"], "holds no prepared subjects"),
    (["pretrain", "{ids}", "-o", "{tmp}/m", "--set", "lossses.lip=1"], "unknown setting"),
    (["pretrain", "{ids}", "-o", "{tmp}/m", "--nproc", "0"], "--nproc"),
    (["pretrain", "{ids}", "-o", "{tmp}/m", "--set", "plane_stride=3"], "plane_stride"),
    (["oneshot", "{tmp}/none.png", "--audio", "{speech}", "-o", "{tmp}/o.mp4", "--model", "{tmp}"], "does not exist"),
    (["oneshot", "{speech}", "--audio", "{speech}", "-o", "{tmp}/o.mp4", "--model", "{tmp}"], "not a readable image"),
    (["oneshot", "{png}", "--audio", "{speech}", "-o", "{tmp}/o.mp4", "--model", "{tmp}"], "no SDTalk checkpoint"),
    (["oneshot", "{png}", "--audio", "{speech}", "-o", "{tmp}/o.mp4", "--model", "{tmp}/m", "--pose", "{tmp}"],
     "is not a folder"),
])
def test_bad_input_is_one_line(argv, needle, identities, tmp_path, capsys):
    import cv2

    png = tmp_path / "face.png"
    cv2.imwrite(str(png), np.full((64, 64, 3), 128, np.uint8))
    values = {"missing": tmp_path / "nope", "tmp": tmp_path, "ids": identities, "speech": BUNDLED_SPEECH, "png": png}
    code = main([a.format(**values) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and len(err.splitlines()) == 1, err


def test_resuming_with_other_settings_is_refused(two_process_model, identities, capsys):
    code = main(["pretrain", str(identities), "-o", str(two_process_model), "--batch", "1", "--quiet",
                 "--iters", str(DDP_STEPS[0]), str(DDP_STEPS[1]), *cli_settings(),
                 "--set", "losses.lip=3"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "losses.lip" in err and "--restart" in err and len(err.splitlines()) == 1


@torch.no_grad()
def test_inference_shortcuts_give_the_training_path_result(identities):
    cfg = tiny_config()
    job = sdtalk.build_job([str(identities)], cfg)
    model = job.model.eval()
    with torch.no_grad():
        for p in model.parameters():      # motion heads start at zero: give them something to do
            p.add_(torch.randn_like(p) * 0.01)
    sample = job.make(job.draw(0, 1)[0])
    codes = model.audio_codes(sample.audio)
    for t in (0, 5, len(sample.audio) - 1):
        torch.testing.assert_close(model.audio_code(sample.audio, t, codes), model.audio_code(sample.audio, t))
    lifted = model.lift(sample.source)
    code = model.audio_code(sample.audio, 5)
    first = model.drive(lifted, code).visible["means"]
    model.train()                              # the uncached path
    torch.testing.assert_close(model.drive(sdtalk.Lifted(lifted.visible, lifted.completion), code).visible["means"],
                               first)
    assert not torch.equal(first, lifted.visible["means"])
