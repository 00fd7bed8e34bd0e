"""The TalkingGaussian recipe and the trainer on a tiny prepared synthetic subject."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from talksplat.prepare import PrepareConfig, prepare
from talksplat.recipes.talkinggaussian import TalkingGaussianConfig
from talksplat.synthetic import SynthConfig, generate
from talksplat.train.checkpoint import latest_checkpoint, load_checkpoint
from talksplat.train.trainer import TrainerConfig, train

SIZE = 64
SECONDS = 5.6


@pytest.fixture(scope="module")
def subject(tmp_path_factory) -> Path:
    synth = generate(SynthConfig.tiny(seed=2, seconds=SECONDS, use_phones=False), tmp_path_factory.mktemp("synth"))
    out = tmp_path_factory.mktemp("subject") / "s"
    prepare(synth.video, out, PrepareConfig(size=128), quiet=True)
    return out


def _config(static=6, motion=6, finetune=3) -> TalkingGaussianConfig:
    cfg = TalkingGaussianConfig(size=SIZE, face_points=600, mouth_points=100, refine_every=4)
    cfg.iterations.static, cfg.iterations.motion, cfg.iterations.finetune = static, motion, finetune
    return cfg


def test_training_runs_all_stages_and_improves(subject, tmp_path):
    summary = train(subject, "talkinggaussian", _config(static=40, motion=10, finetune=5),
                    TrainerConfig(eval_frames=3, preview_every=20), out_dir=tmp_path / "run")
    scores = summary["held_out_by_stage"]
    assert set(scores) == {"static", "motion", "finetune"}
    assert scores["static"]["psnr"] > 20.0  # the backdrop alone is exact outside the head
    assert (tmp_path / "run" / "summary.json").exists()
    assert list((tmp_path / "run" / "previews").glob("*.png"))
    lines = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["step"] == 0


def test_resume_is_exact(subject, tmp_path):
    trainer_cfg = TrainerConfig(checkpoint_every_s=0.0, eval_frames=2, preview_every=10_000)
    train(subject, "talkinggaussian", _config(), trainer_cfg, out_dir=tmp_path / "straight")
    # Interrupted inside the motion stage, then resumed from its last checkpoint.
    train(subject, "talkinggaussian", _config(), trainer_cfg, out_dir=tmp_path / "resumed", stop_after=8)
    train(subject, "talkinggaussian", _config(), trainer_cfg, out_dir=tmp_path / "resumed")
    straight, _, meta_a = load_checkpoint(latest_checkpoint(tmp_path / "straight" / "checkpoints"),
                                          recipe="talkinggaussian", config_type=TalkingGaussianConfig)
    resumed, _, meta_b = load_checkpoint(latest_checkpoint(tmp_path / "resumed" / "checkpoints"),
                                         recipe="talkinggaussian", config_type=TalkingGaussianConfig)
    assert meta_a["step"] == meta_b["step"] == 14
    assert straight.keys() == resumed.keys()
    for key in straight:
        if not key.startswith("rng/"):
            assert torch.equal(straight[key], resumed[key]), key


@pytest.mark.slow
def test_sigkill_then_rerun_continues_from_the_last_checkpoint(subject, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "talksplat.cli.main", "train", str(subject), "-o", str(run),
           "--size", str(SIZE), "--iters", "60", "60", "10", "--checkpoint-every", "0.5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while latest_checkpoint(run / "checkpoints") is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.7)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = latest_checkpoint(run / "checkpoints")
    assert killed_at is not None
    step_at_kill = int(killed_at.name.split("-")[1])
    assert step_at_kill < 129, "the run finished before it could be killed; the test proves nothing"
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-500:]
    assert f"resuming talkinggaussian from {killed_at.name}" in result.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["held_out_by_stage"]["finetune"]["psnr"] > 20.0
