"""The recipe contract, checked for every registered recipe (a new recipe gets these tests for free):
a tiny run through all stages, SIGKILL + resume bitwise identical to an uninterrupted run, one-line
errors for another recipe's checkpoint and for an incompatible config, streamed frames equal to
offline frames, and per-Gaussian attributes that stay aligned through densification."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from talksplat.engine.checkpoint import latest_checkpoint, load_checkpoint
from talksplat.engine.config import apply_overrides
from talksplat.engine.trainer import Engine, TrainerConfig, build_recipe, train
from talksplat.gaussians.gaussian_set import GaussianSet
from talksplat.recipes import RECIPES, load_avatar

NAMES = sorted(RECIPES)


def _tiny_config(name: str):
    cls = RECIPES[name]
    return apply_overrides(cls.Config(), cls.test_overrides)


def _set_args(name: str) -> list[str]:
    return [arg for key, value in RECIPES[name].test_overrides.items() for arg in ("--set", f"{key}={value}")]


def _cli(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "talksplat.cli.main", *args], capture_output=True, text=True,
                          check=False, env=env)


def _one_line_error(result: subprocess.CompletedProcess, fragment: str, code: int = 2) -> None:
    """One line on stderr holding ``fragment``; exit code 2 for a usage error, 1 for a runtime failure."""
    assert result.returncode == code, result.stderr[-600:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-600:]
    assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module", params=NAMES)
def trained(request, tiny_subject, tmp_path_factory):
    """(recipe name, run folder, summary) of a tiny run through every stage."""
    name = request.param
    run = tmp_path_factory.mktemp(f"run-{name}")
    summary = train(tiny_subject, RECIPES[name], _tiny_config(name),
                    TrainerConfig(eval_frames=3, preview_every=1000, quiet=True), out_dir=run)
    return name, run, summary


def test_tiny_run_goes_through_every_stage(trained):
    name, run, summary = trained
    cfg = _tiny_config(name)
    stages = [stage for stage, iterations in vars(cfg.iterations).items() if iterations > 0]
    assert list(summary["held_out_by_stage"]) == stages
    assert all(np.isfinite(s["psnr"]) and s["psnr"] > 10 for s in summary["held_out_by_stage"].values())
    ckpt = latest_checkpoint(run / "checkpoints")
    assert ckpt is not None
    _, saved, meta = load_checkpoint(ckpt, recipe=name, config_type=RECIPES[name].Config)
    assert saved == cfg and meta["step"] == summary["iterations"] - 1
    assert json.loads((run / "config.json").read_text()) == meta["config"]


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_sigkill_then_resume_is_bitwise_identical(name, tiny_subject, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["train", str(tiny_subject), "--recipe", name, *_set_args(name), "--eval-frames", "2", "--quiet"]
    straight = _cli(*common, "-o", str(tmp_path / "straight"), env=env)
    assert straight.returncode == 0, straight.stderr[-600:]

    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "talksplat.cli.main", *common, "-o", str(run), "--checkpoint-every", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env=env)
    deadline = time.time() + 300
    while latest_checkpoint(run / "checkpoints") is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = latest_checkpoint(run / "checkpoints")
    assert killed_at is not None
    total = sum(vars(_tiny_config(name).iterations).values())
    assert int(killed_at.name.split("-")[1]) < total - 1, "the run finished before it was killed; proves nothing"
    resumed = _cli(*common, "-o", str(run), env=env)
    assert resumed.returncode == 0, resumed.stderr[-600:]

    cls = RECIPES[name]
    a, _, meta_a = load_checkpoint(latest_checkpoint(tmp_path / "straight" / "checkpoints"), recipe=name,
                                   config_type=cls.Config)
    b, _, meta_b = load_checkpoint(latest_checkpoint(run / "checkpoints"), recipe=name, config_type=cls.Config)
    assert meta_a["step"] == meta_b["step"] == total - 1
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_other_recipes_checkpoint_and_incompatible_config_give_one_line_errors(trained, tiny_subject, tmp_path):
    import shutil

    name, run, _ = trained
    subject = str(tiny_subject)
    other = tmp_path / "other"
    shutil.copytree(run, other)
    meta_path = latest_checkpoint(other / "checkpoints") / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["recipe"] = "some-other-recipe"
    meta_path.write_text(json.dumps(meta))
    _one_line_error(_cli("train", subject, "--recipe", name, "-o", str(other)), "some-other-recipe")
    _one_line_error(_cli("render", subject, "--run", str(other), "--audio", str(_speech(tmp_path)),
                         "-o", str(tmp_path / "x.mp4")), "some-other-recipe", code=1)   # a recipe this talksplat lacks

    # A config whose networks have another shape than the saved weights.
    meta["recipe"] = name
    hints = _first_int_field_of_a_network(meta["config"])
    node = meta["config"]
    for part in hints[:-1]:
        node = node[part]
    node[hints[-1]] = node[hints[-1]] * 2
    meta_path.write_text(json.dumps(meta))          # the tensors are untouched: their digest still matches
    _one_line_error(_cli("render", subject, "--run", str(other), "--audio", str(_speech(tmp_path)),
                         "-o", str(tmp_path / "x.mp4")), "does not fit", code=1)
    assert not (tmp_path / "x.mp4").exists()

    # Resuming with settings other than the run's is refused, naming the difference.
    _one_line_error(_cli("train", subject, "--recipe", name, "-o", str(run), *_set_args(name), "--seed", "7"),
                    "seed")


def _first_int_field_of_a_network(config: dict, path=()) -> tuple[str, ...]:
    """The dotted path of a network width in the config (a field named ``hidden``)."""
    for key, value in config.items():
        if isinstance(value, dict):
            found = _first_int_field_of_a_network(value, (*path, key))
            if found:
                return found
        elif key == "hidden" and isinstance(value, int):
            return (*path, key)
    return ()


def _speech(tmp_path: Path) -> Path:
    from talksplat.io.audio import save_wav

    path = tmp_path / "speech.wav"
    if not path.exists():
        rng = np.random.default_rng(0)
        t = np.arange(16_000 * 2) / 16_000
        save_wav(path, (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 4 * t))
                        + 0.01 * rng.standard_normal(t.size)).astype(np.float32))
    return path


def test_streamed_frames_equal_offline_frames(trained, tiny_subject, tmp_path):
    from talksplat.io.audio import load_audio
    from talksplat.render.renderer import Renderer, RenderOptions

    _, run, _ = trained
    renderer = Renderer(load_avatar(tiny_subject, run=run))
    samples = load_audio(_speech(tmp_path), 16_000)[:20_000]
    options = RenderOptions(pose="range", pose_range=(3, 12))
    offline = list(renderer.render_frames(samples, options))
    stream = renderer.stream(options)
    rng = np.random.default_rng(1)
    streamed, pos = [], 0
    while pos < len(samples):
        size = int(rng.integers(1, 3000))
        streamed += stream.push(samples[pos:pos + size])
        pos += size
    streamed += stream.flush()
    assert len(streamed) == len(offline) == 32
    for a, b in zip(offline, streamed, strict=True):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_densification_keeps_per_gaussian_attributes_aligned(name, tiny_subject, monkeypatch):
    recipe = build_recipe(RECIPES[name], tiny_subject, _tiny_config(name))
    engine = Engine(recipe)
    changes_seen = []
    original = GaussianSet.step_post_backward

    def checked(self, step, meta, image_size):
        # Before the step, tag every Gaussian with its own position; after it, each Gaussian's tag
        # must be its own (kept or cloned) or its parent's (split: children lie within the parent).
        self.set_attr("probe_mean", self.params["means"].detach().clone())
        self.set_attr("probe_scale", self.params["log_scales"].detach().exp().max(-1).values)
        changes = original(self, step, meta, image_size)
        assert len(self.attrs["probe_mean"]) == len(self) == len(self.attrs["probe_scale"])
        offset = (self.params["means"].detach() - self.attrs["probe_mean"]).norm(dim=-1)
        # Only split children move (by a sample of their parent's Gaussian: within 6 sigma).
        assert int((offset > 0).sum()) <= 2 * changes.get("split", 0)
        assert bool((offset <= 6.0 * self.attrs["probe_scale"]).all())
        if changes.get("cloned", 0) + changes.get("split", 0) > 0:
            changes_seen.append(changes)
        return changes

    monkeypatch.setattr(GaussianSet, "step_post_backward", checked)
    for step in range(engine.total):
        engine.train_step(step)
    assert changes_seen, "densification never grew a set in the tiny run; the test proves nothing"


def test_canonical_gaussians_are_what_the_undeformed_render_draws(trained, tiny_subject):
    """Export reads ``canonical_gaussians``: world-frame Gaussians that, rasterized with the first
    training frame's camera and fused front to back in set order, give the undeformed render."""
    from talksplat.gaussians import rasterize

    _, run, _ = trained
    avatar = load_avatar(tiny_subject, run=run)
    data, size = avatar.subject, avatar.size
    first = int(data.train_frames[0])
    image, transmittance = 0.0, 1.0
    for gaussians in avatar.canonical_gaussians().values():
        out = rasterize(*(gaussians[k] for k in ("means", "quats", "scales", "opacities", "colors")),
                        data.w2c[first], data.K, size, size)
        image = image + transmittance * out.image
        transmittance = transmittance * (1.0 - out.alpha)
    expected = avatar.render(first, None)["head"]
    assert float((image - expected).abs().max()) < 1e-5


def test_avatar_loaded_to_render_equals_the_recipe_built_for_training(trained, tiny_subject):
    """``load_avatar`` builds the recipe with ``weights_from_checkpoint`` (it may skip seeding and
    fitting that the checkpoint replaces): its renders must equal those of the recipe built in full, as
    training builds it, with the same checkpoint restored."""
    from talksplat.engine.trainer import restore

    name, run, _ = trained
    avatar = load_avatar(tiny_subject, run=run)
    assert avatar.recipe.weights_from_checkpoint
    ckpt = latest_checkpoint(run / "checkpoints")
    tensors, cfg, _ = load_checkpoint(ckpt, recipe=name, config_type=RECIPES[name].Config)
    engine = Engine(build_recipe(RECIPES[name], tiny_subject, cfg))
    assert not engine.recipe.weights_from_checkpoint
    restore(engine, tensors, ckpt, "retrain")
    full = engine.recipe.eval()
    for frame in (int(avatar.subject.train_frames[0]), int(avatar.subject.val_frames[0])):
        with torch.no_grad():
            expected = full.render_own(frame)["image"]
        assert torch.equal(expected, avatar.render_own(frame)["image"]), name
