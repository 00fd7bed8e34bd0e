"""The TalkingGaussian recipe and the trainer on a tiny prepared synthetic subject."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from talksplat.engine.checkpoint import latest_checkpoint, load_checkpoint
from talksplat.engine.trainer import TrainerConfig, train
from talksplat.recipes.talkinggaussian import TalkingGaussian, TalkingGaussianConfig

SIZE = 64


@pytest.fixture(scope="module")
def subject(tiny_subject) -> Path:
    return tiny_subject


def _config(static=6, motion=6, finetune=3) -> TalkingGaussianConfig:
    cfg = TalkingGaussianConfig(size=SIZE, face_points=600, mouth_points=100, refine_every=4)
    cfg.iterations.static, cfg.iterations.motion, cfg.iterations.finetune = static, motion, finetune
    return cfg


def test_training_runs_all_stages_and_improves(subject, tmp_path):
    summary = train(subject, TalkingGaussian, _config(static=40, motion=10, finetune=5),
                    TrainerConfig(eval_frames=3, preview_every=20), out_dir=tmp_path / "run")
    scores = summary["held_out_by_stage"]
    assert set(scores) == {"static", "motion", "finetune"}
    assert scores["static"]["psnr"] > 20.0  # the backdrop alone is exact outside the head
    assert (tmp_path / "run" / "summary.json").exists()
    assert list((tmp_path / "run" / "previews").glob("*.png"))
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000
    lines = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["step"] == 0


def test_resume_is_exact(subject, tmp_path):
    trainer_cfg = TrainerConfig(checkpoint_every_s=0.0, eval_frames=2, preview_every=10_000)
    train(subject, TalkingGaussian, _config(), trainer_cfg, out_dir=tmp_path / "straight")
    # Interrupted inside the motion stage, then resumed from its last checkpoint.
    train(subject, TalkingGaussian, _config(), trainer_cfg, out_dir=tmp_path / "resumed", stop_after=8)
    train(subject, TalkingGaussian, _config(), trainer_cfg, out_dir=tmp_path / "resumed")
    straight, _, meta_a = load_checkpoint(latest_checkpoint(tmp_path / "straight" / "checkpoints"),
                                          recipe="talkinggaussian", config_type=TalkingGaussianConfig)
    resumed, _, meta_b = load_checkpoint(latest_checkpoint(tmp_path / "resumed" / "checkpoints"),
                                         recipe="talkinggaussian", config_type=TalkingGaussianConfig)
    assert meta_a["step"] == meta_b["step"] == 14
    assert straight.keys() == resumed.keys()
    for key in straight:
        if not key.startswith("rng/"):
            assert torch.equal(straight[key], resumed[key]), key
