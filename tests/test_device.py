"""``--device auto|cpu|cuda``: which device is chosen and refused (everywhere), that moving a recipe
moves what is not a parameter too (checked on the CPU through a dtype conversion, the same ``_apply``
path a device move takes), and, where CUDA and gsplat exist, TalkingGaussian trained and rendered on the
GPU against the CPU (those tests skip elsewhere)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import talksplat.engine.device as device_module
from talksplat.engine.config import apply_overrides
from talksplat.engine.device import resolve_device
from talksplat.errors import UsageError
from talksplat.recipes import RECIPES

CUDA_READY, CUDA_WHY = device_module.cuda_status()
needs_cuda = pytest.mark.skipif(not CUDA_READY, reason=f"needs CUDA and gsplat: {CUDA_WHY}")


def _pretend_cuda(monkeypatch, usable: bool) -> None:
    monkeypatch.setattr(device_module, "cuda_status", lambda: (usable, "" if usable else "no GPU here"))


def test_auto_picks_cuda_only_when_usable_and_supported(monkeypatch):
    assert resolve_device("cpu", ("cpu", "cuda")).type == "cpu"
    _pretend_cuda(monkeypatch, False)
    assert resolve_device("auto", ("cpu", "cuda")).type == "cpu"
    _pretend_cuda(monkeypatch, True)
    assert resolve_device("auto", ("cpu", "cuda")).type == "cuda"
    assert resolve_device("auto", ("cpu",)).type == "cpu"          # the recipe runs on the CPU only
    assert resolve_device("cuda", ("cpu", "cuda")).type == "cuda"


def test_cuda_where_it_cannot_run_is_a_usage_error_naming_the_fix(monkeypatch):
    _pretend_cuda(monkeypatch, False)
    with pytest.raises(UsageError, match="no GPU here; use --device cpu"):
        resolve_device("cuda", ("cpu", "cuda"))
    _pretend_cuda(monkeypatch, True)
    with pytest.raises(UsageError, match="recipe x runs on the CPU only so far; use --device cpu"):
        resolve_device("cuda", ("cpu",), "recipe x")
    with pytest.raises(UsageError, match="must be one of auto, cpu, cuda"):
        resolve_device("gpu", ("cpu", "cuda"))


@pytest.mark.skipif(CUDA_READY, reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("command", ["train", "render", "serve"])
def test_cli_refuses_cuda_without_a_gpu_in_one_line(command, tmp_path):
    args = {"train": ["train", str(tmp_path)],
            "render": ["render", str(tmp_path), "--audio", str(tmp_path / "a.wav"), "-o", str(tmp_path / "o.mp4")],
            "serve": ["serve", str(tmp_path)]}[command]
    (tmp_path / "subject.json").write_text("{}")       # get past the "not a prepared subject" check
    (tmp_path / "a.wav").write_bytes(b"")
    result = subprocess.run([sys.executable, "-m", "talksplat.cli.main", *args, "--device", "cuda"],
                            capture_output=True, text=True, check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-600:]
    assert "--device cuda" in lines[0] and "use --device cpu" in lines[0], lines[0]


def test_moving_a_recipe_moves_attributes_densify_state_and_adam_moments(tiny_subject):
    """``GaussianSet._apply`` (what ``.to(device)`` calls) reaches the per-Gaussian attributes, the
    densification statistics and the Adam moments, restored or live; here through ``.double()``."""
    from talksplat.engine.trainer import Engine, build_recipe

    cls = RECIPES["talkinggaussian"]
    recipe = build_recipe(cls, tiny_subject, apply_overrides(cls.Config(), cls.test_overrides))
    engine = Engine(recipe)
    for step in range(3):
        engine.train_step(step)
    face = recipe.sets["face"]
    face.attrs["tag"] = torch.zeros(len(face))
    face.densify_state.count = torch.zeros(len(face))
    face._pending_adam = {"means": {"exp_avg": torch.zeros(len(face), 3), "step": torch.tensor(3.0)}}
    live = next(iter(face.optimizers.values()))
    assert live.state, "the optimizer has moments after a step"
    recipe.double()
    assert face.params["means"].dtype == torch.float64
    assert face.attrs["tag"].dtype == torch.float64
    assert face.densify_state.count.dtype == torch.float64
    assert face._pending_adam["means"]["exp_avg"].dtype == torch.float64
    for state in live.state.values():
        assert all(v.dtype == torch.float64 for v in state.values() if isinstance(v, torch.Tensor) and v.is_floating_point())


def test_subject_tensors_and_frames_follow_the_device(tiny_subject):
    """After ``SubjectData.to(device)`` every tensor it hands out is on that device (the ``meta``
    device stands in for a GPU: no data, but device checks as real)."""
    from talksplat.data.subject import load_subject_data

    data = load_subject_data(tiny_subject, 64, "mel").to("meta")
    for tensor in (data.K, data.w2c, data.background, data.expressions, data.audio, data.image(0), data.labels(0),
                   data.backdrop(0)):
        assert tensor.device.type == "meta"
    assert data.backdrop(0).shape == (64, 64, 3)


@needs_cuda
def test_talkinggaussian_trains_and_renders_on_cuda_like_on_the_cpu(tiny_subject, tmp_path):  # pragma: no cover
    """Where CUDA and gsplat exist: a tiny TalkingGaussian run on the GPU goes through every stage and
    checkpoints; the same checkpoint rendered on the GPU and on the CPU gives nearly the same frames."""
    import numpy as np

    from talksplat.engine.trainer import TrainerConfig, train
    from talksplat.render.renderer import Renderer, RenderOptions

    cls = RECIPES["talkinggaussian"]
    summary = train(tiny_subject, cls, apply_overrides(cls.Config(), cls.test_overrides),
                    TrainerConfig(eval_frames=3, preview_every=1000, quiet=True, device="cuda"), out_dir=tmp_path / "run")
    assert summary["device"].startswith("cuda") and summary["iterations"] > 0
    samples = (0.1 * np.random.default_rng(0).standard_normal(16_000)).astype(np.float32)
    frames = {}
    for device in ("cpu", "cuda"):
        renderer = Renderer.open(tiny_subject, run=tmp_path / "run", device=device)
        frames[device] = np.stack(list(renderer.render_frames(samples, RenderOptions())))
    difference = np.abs(frames["cpu"].astype(int) - frames["cuda"].astype(int))
    assert difference.mean() < 1.0 and np.percentile(difference, 99) <= 8, (difference.mean(), difference.max())
