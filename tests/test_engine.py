"""The engine around the recipes: typed settings from the CLI, runs that refuse to resume with other
settings or another subject, audio features computed on demand, the recipe listing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from talksplat.data.samplers import (
    IncrementalSampler,
    IncrementalSamplingConfig,
    MinimumShareSampler,
    UniformSampler,
)
from talksplat.engine.config import (
    RecipeConfig,
    apply_overrides,
    config_from_saved,
    differences,
    overrides_from_file,
)
from talksplat.engine.trainer import Stage, stage_at
from talksplat.errors import TalksplatError
from talksplat.recipes import RECIPES


@dataclass
class _Inner:
    width: int = 8
    rate: float = 0.5
    names: tuple[str, ...] = ("a", "b")


@dataclass
class _Config:
    flag: bool = True
    label: str = "x"
    maybe: int | None = None
    inner: _Inner = field(default_factory=_Inner)


def test_overrides_are_parsed_by_field_type_and_unknown_keys_refused(tmp_path):
    cfg = apply_overrides(_Config(), {"flag": "false", "inner.width": "16", "inner.rate": "2e-3",
                                      "inner.names": "c,d,e", "maybe": "none", "label": "y"})
    assert cfg == _Config(flag=False, label="y", inner=_Inner(width=16, rate=0.002, names=("c", "d", "e")))
    assert apply_overrides(_Config(), {"maybe": "3"}).maybe == 3
    with pytest.raises(TalksplatError, match="unknown setting 'inner.wdth'.*inner.width"):
        apply_overrides(_Config(), {"inner.wdth": "3"})
    with pytest.raises(TalksplatError, match="inner.width must be an integer"):
        apply_overrides(_Config(), {"inner.width": "3.5"})
    with pytest.raises(TalksplatError, match="true or false"):
        apply_overrides(_Config(), {"flag": "perhaps"})
    toml = tmp_path / "s.toml"
    toml.write_text("flag = false\n[inner]\nwidth = 4\n")
    assert apply_overrides(_Config(), overrides_from_file(toml)) == _Config(flag=False, inner=_Inner(width=4))
    assert differences(_Config(), _Config(inner=_Inner(width=4))) == [("inner.width", 8, 4)]


def test_stage_schedule_and_incremental_sampler_follow_the_stages():
    stages = [Stage("a", 3, ("gaussians",)), Stage("b", 0, ("gaussians",)), Stage("c", 2, ("networks",))]
    assert [stage_at(stages, s)[0].name for s in range(5)] == ["a", "a", "a", "c", "c"]
    assert stage_at(stages, 4)[1] == 3

    class _Data:
        train_frames = np.arange(100)

        def channel(self, name):
            return {"lip_open": np.arange(100.0), "blink": -np.arange(100.0), "lips_part": np.arange(100.0)}[name]

    sampler = IncrementalSampler(_Data(), IncrementalSamplingConfig(window=0.1, every=10, sweep_fraction=0.5))
    rng = np.random.default_rng(0)
    early = [sampler.sample(s, 0, 1000, rng) for s in range(0, 10, 3)]      # lip_open order, window start
    late = [sampler.sample(s, 0, 1000, rng) for s in range(450, 480, 3)]    # near the end of the sweep
    assert max(early) < 10 and min(late) >= 80


def test_recipes_command_lists_every_recipe_with_its_paper_and_settings():
    result = subprocess.run([sys.executable, "-m", "talksplat.cli.main", "recipes"], capture_output=True, text=True,
                            check=True)
    for name, cls in RECIPES.items():
        assert name in result.stdout and cls.paper in result.stdout
    one = subprocess.run([sys.executable, "-m", "talksplat.cli.main", "recipes", "talkinggaussian"],
                         capture_output=True, text=True, check=True)
    assert "iterations.motion = 3000" in one.stdout and "losses.mouth_box = 2.0" in one.stdout


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "talksplat.cli.main", *args], capture_output=True, text=True,
                          check=False)


def _one_line_error(result, fragment: str, code: int = 2) -> None:
    """One line on stderr holding ``fragment``; exit code 2 for a usage error, 1 for a runtime failure."""
    assert result.returncode == code, result.stderr[-500:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr[-500:]


TINY = ["--size", "64", "--iters", "4", "4", "2", "--set", "face_points=300", "--set", "mouth_points=60",
        "--set", "refine_every=2", "--eval-frames", "2", "--quiet"]


@pytest.fixture(scope="module")
def own_subject(tiny_subject, tmp_path_factory) -> Path:
    """A copy of the tiny subject with a trained tiny run (tests here may change the subject)."""
    subject = tmp_path_factory.mktemp("engine") / "s"
    shutil.copytree(tiny_subject, subject, ignore=shutil.ignore_patterns("runs"))
    result = _cli("train", str(subject), *TINY)
    assert result.returncode == 0, result.stderr[-500:]
    return subject


def test_rerun_resumes_and_other_settings_are_refused(own_subject):
    again = _cli("train", str(own_subject), "--quiet")            # no settings: the run's own, finished
    assert again.returncode == 0, again.stderr[-500:]
    same = _cli("train", str(own_subject), *TINY)
    assert same.returncode == 0, same.stderr[-500:]
    changed = _cli("train", str(own_subject), *[a if a != "2" else "3" for a in TINY])
    _one_line_error(changed, "iterations.finetune: run 2 vs asked 3")
    _one_line_error(_cli("train", str(own_subject), "--iters", "0", "0", "0", "-o", str(own_subject / "zero")),
                    "nothing to train")
    _one_line_error(_cli("train", str(own_subject), "--iters", "1", "2"), "needs 3 numbers")
    _one_line_error(_cli("train", str(own_subject), "--set", "no_such_field=1"), "unknown setting")
    _one_line_error(_cli("train", str(own_subject), "-o", str(own_subject / "subject.json")), "is a file")


def test_a_subject_reprepared_from_another_video_is_refused(own_subject, tmp_path):
    copy = tmp_path / "s"
    shutil.copytree(own_subject, copy)
    meta = json.loads((copy / "subject.json").read_text())
    meta["source"]["sha256"] = "0" * 64
    (copy / "subject.json").write_text(json.dumps(meta))
    speech = tmp_path / "a.wav"
    from talksplat.io.audio import save_wav

    t = np.arange(16_000) / 16_000
    save_wav(speech, (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32))
    _one_line_error(_cli("render", str(copy), "--audio", str(speech), "-o", str(tmp_path / "o.mp4")), "another video",
                    code=1)
    _one_line_error(_cli("train", str(copy), "--quiet"), "another video", code=1)
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.slow
def test_an_audio_feature_prepare_did_not_write_is_computed_cached_and_trained_on(own_subject, tmp_path):
    from talksplat.data.subject import load_subject_data

    data = load_subject_data(own_subject, 64, "mel+phones")
    assert data.audio.shape == (data.n_frames, 16, 120)
    cached = list((own_subject / "audio" / "cache").glob("*.npy"))
    assert len(cached) == 1
    run = tmp_path / "run"
    result = _cli("train", str(own_subject), *TINY, "--audio-feature", "mel+phones", "-o", str(run))
    assert result.returncode == 0, result.stderr[-500:]
    assert json.loads((run / "config.json").read_text())["audio_feature"] == "mel+phones"
    with pytest.raises(TalksplatError, match="unknown audio feature"):
        load_subject_data(own_subject, 64, "mfcc")


def test_minimum_share_sampler_draws_rare_frames_at_the_share_and_leaves_common_ones_alone():
    train = np.arange(1000)
    base = UniformSampler(train)
    rare = MinimumShareSampler(base, np.array([3, 7]), train, share=0.1)
    rng = np.random.default_rng(0)
    draws = np.array([rare.sample(s, 0, 5000, rng) for s in range(5000)])
    assert 0.08 < np.isin(draws, [3, 7]).mean() < 0.12            # 0.2% of the frames, 10% of the draws
    common = MinimumShareSampler(base, np.arange(200), train, share=0.1)   # already 20% of the frames
    a, b = np.random.default_rng(1), np.random.default_rng(1)
    assert [common.sample(s, 0, 100, a) for s in range(100)] == [base.sample(s, 0, 100, b) for s in range(100)]
    none = MinimumShareSampler(base, np.array([], dtype=int), train, share=0.1)   # no frames: the base
    assert none.extra == 0.0


@dataclass
class _LaterInner:
    new: float = 1.0
    old: float = 2.0


@dataclass
class _NestedConfig(RecipeConfig):
    absent_in_older_checkpoints: ClassVar[dict[str, object]] = {"inner.new": 0.0, "top": 5}
    inner: _LaterInner = field(default_factory=_LaterInner)
    top: int = 3


def test_dotted_settings_absent_from_older_configs_take_the_value_they_were_trained_with():
    older = config_from_saved(_NestedConfig, {"size": 64, "inner": {"old": 4.0}})
    assert (older.inner.new, older.inner.old, older.top) == (0.0, 4.0, 5)
    newer = config_from_saved(_NestedConfig, {"size": 64, "inner": {"new": 7.0, "old": 4.0}, "top": 1})
    assert (newer.inner.new, newer.top) == (7.0, 1)
    assert config_from_saved(_NestedConfig, {"size": 64}).inner.new == 0.0      # the whole block missing
