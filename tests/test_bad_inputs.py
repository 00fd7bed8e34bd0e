"""The bad-input corpus (issue 21): what a new user might type, wrong, into every command.

Each case runs the ``talksplat`` command line in-process (``cli.main.main``, with ``capfd`` so that
native libraries writing to file descriptor 2 are caught too) and asserts:

- the exit code: 2 for a usage error (the command line is wrong), 1 for a runtime failure;
- exactly one line on stderr, ``talksplat CMD: error: ...``, holding the fragments that name the
  problem (and, where the case has one, the fix); no traceback;
- no partial output and earlier good outputs byte-identical: every file of the shared workspace
  (a trained subject, a rendered video, the inputs) keeps its size, modification time and, for the
  checkpoints and the video, its sha256; no file appears;
- for the cases marked ``no_load``: the refusal comes before the subject or the model is loaded
  (loading them fails the test), so a bad argument costs a second, not the ~15 s of a real subject.

Everything is built once (one tiny trained run on a copy of ``tiny_subject``); the cases that need
a model of their own (damaged checkpoints) copy the run folder, a few hundred kB.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from talksplat.cli.main import main

TINY = ["--size", "64", "--iters", "4", "4", "2", "--set", "face_points=300", "--set", "mouth_points=60",
        "--set", "refine_every=2", "--eval-frames", "2", "--quiet"]
USAGE, RUNTIME = 2, 1


# --------------------------------------------------------------------------------------- workspace
def _tone(seconds: float, seed: int = 0) -> np.ndarray:
    """Speech-like audio: a 150-250 Hz tone switched on and off at syllable rate."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16_000)) / 16_000
    return (0.3 * np.sin(2 * np.pi * rng.uniform(150, 250) * t) * (np.sin(2 * np.pi * 4 * t) > 0)).astype(np.float32)


def _video(path: Path, seconds: float, audio: bool, size: int = 64) -> Path:
    """Grey noise (no face in it), with silence-free audio when ``audio``."""
    from talksplat.io.video import VideoWriter

    n = int(25 * seconds)
    rng = np.random.default_rng(0)
    with VideoWriter(path, size, size, fps=25, audio=_tone(n / 25) if audio else None) as writer:
        for _ in range(n):
            writer.write(rng.integers(90, 110, (size, size, 3), dtype=np.uint8))
    return path


@pytest.fixture(scope="module")
def w(tiny_subject, tmp_path_factory) -> SimpleNamespace:
    """The shared workspace: a trained subject, a good render and every bad input the cases use."""
    from talksplat.io.audio import save_wav

    root = tmp_path_factory.mktemp("bad_inputs")
    subject = root / "subject"
    shutil.copytree(tiny_subject, subject, ignore=shutil.ignore_patterns("runs"))
    assert main(["train", str(subject), *TINY]) == 0
    ws = SimpleNamespace(root=root, subject=subject, run=subject / "runs" / "talkinggaussian",
                         out=root / "out.mp4", missing=root / "missing", folder=root / "folder",
                         blocker=root / "blocker", notes=root / "notes.mp4", corrupt=root / "corrupt.mp3",
                         unprepared=root / "unprepared", untrained=root / "untrained",
                         speech=save_wav(root / "speech.wav", _tone(1.2)),
                         silent=save_wav(root / "silent.wav", np.zeros(16_000, np.float32)),
                         short=save_wav(root / "short.wav", _tone(0.01)),
                         good=root / "good.mp4")
    ws.folder.mkdir()
    ws.unprepared.mkdir()
    ws.untrained.mkdir()
    (ws.untrained / "subject.json").write_text("{}")
    ws.blocker.write_text("a file where a folder should be\n")
    ws.notes.write_text("this is not a video\n")
    ws.corrupt.write_bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    ws.other = _video(root / "other.mp4", 5.5, audio=True)          # passes every header check
    ws.mute = _video(root / "mute.mp4", 5.5, audio=False)
    ws.brief = _video(root / "brief.mp4", 2.0, audio=True)
    source = (subject / "media" / "full.mp4").read_bytes()
    (root / "cut.mp4").write_bytes(source[: len(source) // 2])
    ws.cut = root / "cut.mp4"
    np.save(root / "flat.npy", np.zeros(10, np.float32))
    ws.flat = root / "flat.npy"
    (root / "lips.txt").write_text("not numpy\n")
    ws.lips_text = root / "lips.txt"
    ws.bad_toml = root / "bad.toml"
    ws.bad_toml.write_text("size = [\n")
    assert main(["render", str(subject), "--audio", str(ws.speech), "-o", str(ws.good), "--quiet"]) == 0
    return ws


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(ws: SimpleNamespace) -> dict:
    """Every file of the workspace: size and mtime (a rewrite changes them), sha256 of the precious ones."""
    state = {}
    for path in sorted(ws.root.rglob("*")):
        st = path.lstat()
        state[str(path.relative_to(ws.root))] = (path.is_dir(), st.st_size if path.is_file() else 0,
                                                 0 if path.is_dir() else st.st_mtime_ns)
    for path in [ws.good, ws.subject / "subject.json", *sorted(ws.run.rglob("*.safetensors")),
                 *sorted(ws.run.rglob("meta.json"))]:
        state[f"sha256:{path.relative_to(ws.root)}"] = _sha256(path)
    return state


def _run(capfd, argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return code, out, err


def _assert_refused(code: int, err: str, command: str, expected_code: int, fragments) -> None:
    lines = err.splitlines()
    assert code == expected_code, (code, err)
    assert "Traceback" not in err, err
    assert len(lines) == 1, err                          # exactly one line: no warnings, no native logs
    assert lines[0].startswith(f"talksplat {command}: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def _forbid_loading(monkeypatch) -> None:
    """Loading the subject or the model fails the test: these refusals must come first."""
    from talksplat.engine import trainer
    from talksplat.render import renderer

    def loaded(*args, **kwargs):
        raise AssertionError("the subject or model was loaded before the arguments were checked")

    monkeypatch.setattr(trainer, "load_subject_data", loaded)
    monkeypatch.setattr(trainer, "load_latest_valid", loaded)
    monkeypatch.setattr(renderer, "load_avatar", loaded)


# --------------------------------------------------------------------------------------- the table
@dataclass
class Case:
    argv: object                     # workspace -> argument list
    code: int
    fragments: tuple[str, ...]
    no_load: bool = False            # the refusal must come before anything is loaded
    new: bool = True                 # False: already covered, less strictly, by another test file
    issue: str = ""                  # the issue 21 failure it pins ("" for the cases that passed before)
    patch: object = None             # (monkeypatch, workspace) -> None: simulates what a test cannot make
    extra: dict = field(default_factory=dict)


def _unwritable(module_attr: str):
    """Patches ``module.tempfile.<attr>`` (the writability probe) to fail as a read-only folder does:
    the tests may run as root, for whom a read-only mode bit does not stop writes."""
    module, attr = module_attr.rsplit(".", 1)

    def patch(monkeypatch, ws):
        import importlib

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(importlib.import_module(module).tempfile, attr, refuse)
    return patch


CASES: dict[str, Case] = {
    # ------------------------------------------------------------------ prepare
    "prepare/missing video": Case(lambda w: ["prepare", w.missing / "v.mp4", "-o", w.root / "p"], USAGE,
                                  ("no such file",), new=False),
    "prepare/folder as video": Case(lambda w: ["prepare", w.folder, "-o", w.root / "p"], USAGE,
                                    ("is a folder", "give the video file itself"), new=False,
                                    issue="a folder given as the video: 'no such file'"),
    "prepare/text file as video": Case(lambda w: ["prepare", w.notes, "-o", w.root / "p"], USAGE,
                                       ("not a readable video", "mp4/mov"), new=False),
    "prepare/audio file as video": Case(lambda w: ["prepare", w.speech, "-o", w.root / "p"], USAGE,
                                        ("no video stream",), new=False),
    "prepare/no audio stream": Case(lambda w: ["prepare", w.mute, "-o", w.root / "p"], USAGE, ("--no-audio",),
                                    new=False),
    "prepare/too short": Case(lambda w: ["prepare", w.brief, "-o", w.root / "p"], USAGE, ("at least 5 s",), new=False),
    "prepare/truncated video": Case(lambda w: ["prepare", w.cut, "-o", w.root / "p", "--no-audio", "--quiet"], USAGE,
                                    ("truncated", "re-export or re-download it"), new=False,
                                    issue="a truncated input leaves an orphan media/full.mp4"),
    "prepare/-o is a file": Case(lambda w: ["prepare", w.other, "-o", w.blocker], USAGE,
                                 ("exists and is not a folder",), new=False),
    "prepare/unwritable -o": Case(lambda w: ["prepare", w.other, "-o", w.root / "p"], RUNTIME,
                                  ("cannot write to the subject folder", "Permission denied"),
                                  patch=_unwritable("talksplat.prepare.guards.TemporaryFile"), new=False,
                                  issue="prepare with a read-only output folder: OSError traceback"),
    "prepare/other video into a trained subject": Case(
        lambda w: ["prepare", w.other, "-o", w.subject], USAGE, ("has trained runs from another video", "--force"),
        new=False, issue="prepare of another video into a trained subject replaces its dataset (lost work)"),
    "prepare/odd --size": Case(lambda w: ["prepare", w.other, "-o", w.root / "p", "--size", "63"], USAGE,
                               ("--size must be an even number",)),
    "prepare/--fps not dividing 16 kHz": Case(lambda w: ["prepare", w.other, "-o", w.root / "p", "--fps", "7"],
                                              USAGE, ("--fps must divide",)),
    "prepare/--size not a number": Case(lambda w: ["prepare", w.other, "-o", w.root / "p", "--size", "big"], USAGE,
                                        ("invalid int value", "--help")),
    "prepare/no -o": Case(lambda w: ["prepare", w.other], USAGE, ("required", "-o/--out")),
    # ------------------------------------------------------------------ train
    "train/missing subject": Case(lambda w: ["train", w.missing], USAGE, ("does not exist", "talksplat prepare"),
                                  no_load=True),
    "train/unprepared folder": Case(lambda w: ["train", w.unprepared], USAGE, ("not a prepared subject",),
                                    no_load=True),
    "train/unknown recipe": Case(lambda w: ["train", w.subject, "--recipe", "nerf"], USAGE,
                                 ("unknown recipe 'nerf'", "talksplat recipes"), no_load=True),
    "train/--iters count": Case(lambda w: ["train", w.subject, "--iters", "1", "2"], USAGE, ("needs 3 numbers",),
                                no_load=True, new=False),
    "train/--iters negative": Case(lambda w: ["train", w.subject, "--iters", "-1", "0", "0"], USAGE, (">= 0",),
                                   no_load=True),
    "train/--iters 0 0 0": Case(lambda w: ["train", w.subject, "--iters", "0", "0", "0", "-o", w.root / "zero"],
                                USAGE, ("nothing to train", "at least one iteration"), no_load=True, new=False,
                                issue="--iters 0 0 0 'trains' and leaves a run with no checkpoint"),
    "train/--restart with --iters 0 0 0": Case(lambda w: ["train", w.subject, "--restart", "--iters", "0", "0", "0"],
                                             USAGE, ("nothing to train",), no_load=True),   # the run is not deleted
    "train/unknown --set key": Case(lambda w: ["train", w.subject, "--set", "face_pionts=3"], USAGE,
                                    ("unknown setting 'face_pionts'", "did you mean face_points"), no_load=True),
    "train/--set wrong type": Case(lambda w: ["train", w.subject, "--set", "seed=abc"], USAGE,
                                   ("seed must be an integer",), no_load=True),
    "train/--set without =": Case(lambda w: ["train", w.subject, "--set", "seed"], USAGE, ("KEY=VALUE",),
                                  no_load=True),
    "train/--config missing": Case(lambda w: ["train", w.subject, "--config", w.missing / "c.toml"], USAGE,
                                   ("config file", "does not exist"), no_load=True),
    "train/--config bad TOML": Case(lambda w: ["train", w.subject, "--config", w.bad_toml], USAGE,
                                    ("not valid TOML",), no_load=True),
    "train/odd --size": Case(lambda w: ["train", w.subject, "--size", "33", "-o", w.root / "r"], USAGE,
                             ("size must be an even number",), no_load=True),
    "train/unknown --audio-feature": Case(lambda w: ["train", w.subject, "--audio-feature", "mfcc", "-o", w.root / "r"],
                                          USAGE, ("unknown audio feature 'mfcc'", "choose one of"), no_load=True),
    "train/--quality unknown": Case(lambda w: ["train", w.subject, "--quality", "ultra"], USAGE,
                                    ("invalid choice", "--help"), no_load=True),
    "train/--eval-frames negative": Case(lambda w: ["train", w.subject, "--eval-frames", "-1"], USAGE, (">= 0",),
                                         no_load=True),
    "train/-o is a file": Case(lambda w: ["train", w.subject, "-o", w.blocker], USAGE, ("is a file", "-o"),
                               no_load=True, new=False,
                               issue="train -o naming a file: FileExistsError after ~15 s of loading"),
    "train/-o below a file": Case(lambda w: ["train", w.subject, "-o", w.blocker / "run"], USAGE,
                                  ("cannot be made", "is a file"), no_load=True),
    "train/unwritable -o": Case(lambda w: ["train", w.subject, "-o", w.root / "r"], RUNTIME,
                                ("cannot write the run folder", "Permission denied", "-o"), no_load=True,
                                patch=_unwritable("talksplat.io.paths.TemporaryFile"),
                                issue="train with a read-only output folder: OSError traceback"),
    "train/new --iters on a finished run": Case(
        lambda w: ["train", w.subject, *[a if a != "2" else "7" for a in TINY]], USAGE,
        ("other settings", "iterations.finetune: run 2 vs asked 7", "--restart"), new=False,
        issue="new --iters on a finished run are ignored while it 'resumes'"),
    # ------------------------------------------------------------------ render
    "render/missing audio": Case(lambda w: ["render", w.subject, "--audio", w.missing / "a.wav", "-o", w.out], USAGE,
                                 ("does not exist",), no_load=True, new=False),
    "render/folder as audio": Case(lambda w: ["render", w.subject, "--audio", w.folder, "-o", w.out], USAGE,
                                   ("is a folder", "give an audio file"), no_load=True,
                                   issue="a folder given as the audio: 'no such file'"),
    "render/corrupt audio": Case(lambda w: ["render", w.subject, "--audio", w.corrupt, "-o", w.out], USAGE,
                                 ("cannot",), no_load=True, new=False,
                                 issue="audio validated only after the model loaded (7-20 s)"),
    "render/silent audio": Case(lambda w: ["render", w.subject, "--audio", w.silent, "-o", w.out], USAGE,
                                ("silent",), no_load=True),
    "render/too short audio": Case(lambda w: ["render", w.subject, "--audio", w.short, "-o", w.out], USAGE,
                                   ("s long",), no_load=True),
    "render/video as audio without sound": Case(lambda w: ["render", w.subject, "--audio", w.mute, "-o", w.out],
                                                USAGE, ("no audio stream",), no_load=True),
    "render/--workers 0": Case(lambda w: ["render", w.subject, "--audio", w.speech, "-o", w.out, "--workers", "0"],
                               USAGE, ("--workers", ">= 1"), no_load=True),
    "render/-o not .mp4": Case(lambda w: ["render", w.subject, "--audio", w.speech, "-o", w.root / "o.avi"], USAGE,
                               (".mp4",), no_load=True),
    "render/-o is a folder": Case(lambda w: ["render", w.subject, "--audio", w.speech, "-o", w.root / "folder.mp4"],
                                  USAGE, ("is a folder",), no_load=True,
                                  extra={"setup": lambda w: (w.root / "folder.mp4").mkdir(exist_ok=True)}),
    "render/-o in a missing folder": Case(lambda w: ["render", w.subject, "--audio", w.speech, "-o",
                                                     w.missing / "o.mp4"], USAGE, ("does not exist",), no_load=True),
    "render/-o below a file": Case(lambda w: ["render", w.subject, "--audio", w.speech, "-o", w.blocker / "o.mp4"],
                                   USAGE, ("not a folder",), no_load=True, new=False),
    "render/unwritable -o": Case(lambda w: ["render", w.subject, "--audio", w.speech, "-o", w.out], RUNTIME,
                                 ("cannot write to", "Permission denied"), no_load=True,
                                 patch=_unwritable("talksplat.render.renderer.mkstemp")),
    "render/missing subject": Case(lambda w: ["render", w.missing, "--audio", w.speech, "-o", w.out], USAGE,
                                   ("does not exist",)),
    "render/unprepared folder": Case(lambda w: ["render", w.unprepared, "--audio", w.speech, "-o", w.out], USAGE,
                                     ("not a prepared subject",), new=False),
    "render/untrained subject": Case(lambda w: ["render", w.untrained, "--audio", w.speech, "-o", w.out], USAGE,
                                     ("no trained model", "talksplat train")),
    "render/unknown --recipe": Case(lambda w: ["render", w.subject, "--recipe", "unigs", "--audio", w.speech,
                                               "-o", w.out], USAGE, ("no trained model",)),
    "render/--pose-range syntax": Case(lambda w: ["render", w.subject, "--audio", w.speech, "-o", w.out,
                                                  "--pose-range", "5"], USAGE, ("START:END",), no_load=True),
    "render/--pose-range out of the video": Case(lambda w: ["render", w.subject, "--audio", w.speech, "-o", w.out,
                                                            "--pose-range", "100:999"], USAGE, ("pose range",),
                                                 new=False),
    "render/--pose loop with a range": Case(lambda w: ["render", w.subject, "--audio", w.speech, "-o", w.out,
                                                       "--pose", "loop", "--pose-range", "0:10"], USAGE,
                                            ("--pose range",), no_load=True),
    "render/--expression unknown": Case(lambda w: ["render", w.subject, "--audio", w.speech, "-o", w.out,
                                                   "--expression", "angry"], USAGE, ("expression must be one of",)),
    "render/--preset unknown": Case(lambda w: ["render", w.subject, "--audio", w.speech, "-o", w.out,
                                               "--preset", "warp"], USAGE, ("invalid choice",), no_load=True),
    "render/no --audio": Case(lambda w: ["render", w.subject, "-o", w.out], USAGE, ("--audio",), no_load=True),
    # ------------------------------------------------------------------ eval
    "eval/missing subject": Case(lambda w: ["eval", w.missing], USAGE, ("does not exist",), no_load=True, new=False),
    "eval/missing audio": Case(lambda w: ["eval", w.subject, "--audio", w.missing / "a.wav"], USAGE,
                               ("does not exist",), no_load=True, new=False),
    "eval/folder as audio": Case(lambda w: ["eval", w.subject, "--audio", w.folder], USAGE, ("is a folder",),
                                 no_load=True),
    "eval/corrupt audio": Case(lambda w: ["eval", w.subject, "--audio", w.corrupt, "-o", w.root / "e"], USAGE,
                               ("cannot",), no_load=True),
    "eval/silent audio": Case(lambda w: ["eval", w.subject, "--audio", w.silent, "-o", w.root / "e"], USAGE,
                              ("silent",), no_load=True),
    "eval/small --landmark-size": Case(lambda w: ["eval", w.subject, "--landmark-size", "64"], USAGE,
                                       ("--landmark-size must be at least 128",), no_load=True),
    "eval/--max-frames 1": Case(lambda w: ["eval", w.subject, "--max-frames", "1"], USAGE, ("--max-frames",),
                                no_load=True),
    "eval/--reference-seconds 0": Case(lambda w: ["eval", w.subject, "--reference-seconds", "0"], USAGE,
                                       ("must be positive",), no_load=True),
    "eval/--lpips-weights missing": Case(lambda w: ["eval", w.subject, "--lpips-weights", w.missing], USAGE,
                                         ("does not exist",), no_load=True),
    "eval/--lpips-weights empty": Case(lambda w: ["eval", w.subject, "--lpips-weights", w.folder], USAGE,
                                       ("no AlexNet backbone",), no_load=True, new=False),
    "eval/-o is a file": Case(lambda w: ["eval", w.subject, "-o", w.blocker], USAGE, ("is a file", "-o"),
                              no_load=True),
    "eval/unwritable -o": Case(lambda w: ["eval", w.subject, "-o", w.root / "e"], RUNTIME,
                               ("cannot write the output folder", "Permission denied"), no_load=True,
                               patch=_unwritable("talksplat.io.paths.TemporaryFile")),
    "eval/--pose unknown": Case(lambda w: ["eval", w.subject, "--pose", "spin"], USAGE, ("invalid choice",),
                                no_load=True),
    # ------------------------------------------------------------------ sync-train
    "sync-train/nothing to train on": Case(lambda w: ["sync-train", w.root / "m"], USAGE, ("nothing to train on",),
                                           new=False),
    "sync-train/--landmarks without --audio": Case(lambda w: ["sync-train", w.root / "m", "--landmarks", w.flat],
                                                   USAGE, ("one --audio for each --landmarks",)),
    "sync-train/--minutes 0": Case(lambda w: ["sync-train", w.root / "m", "--minutes", "0"], USAGE,
                                   ("must be positive",)),
    "sync-train/missing --video": Case(lambda w: ["sync-train", w.root / "m", "--video", w.missing / "v.mp4"], USAGE,
                                       ("no such file",)),
    "sync-train/folder as --video": Case(lambda w: ["sync-train", w.root / "m", "--video", w.folder], USAGE,
                                         ("is a folder",)),
    "sync-train/--landmarks not numpy": Case(lambda w: ["sync-train", w.root / "m", "--landmarks", w.lips_text,
                                                        "--audio", w.speech], USAGE, ("not a numpy array file",)),
    "sync-train/--landmarks wrong shape": Case(lambda w: ["sync-train", w.root / "m", "--landmarks", w.flat,
                                                          "--audio", w.speech], USAGE, ("landmarks must be",)),
    "sync-train/--subject unprepared": Case(lambda w: ["sync-train", w.root / "m", "--subject", w.unprepared], USAGE,
                                            ("not a prepared subject",)),
    "sync-train/--steps not a number": Case(lambda w: ["sync-train", w.root / "m", "--steps", "many"], USAGE,
                                            ("invalid int value",)),
    # ------------------------------------------------------------------ synth
    "synth/odd --size": Case(lambda w: ["synth", w.root / "y", "--size", "63"], USAGE, ("even",), new=False),
    "synth/huge --size": Case(lambda w: ["synth", w.root / "y", "--size", "4096"], USAGE, ("too large",)),
    "synth/missing --audio": Case(lambda w: ["synth", w.root / "y", "--audio", w.missing / "a.wav"], USAGE,
                                  ("no such file",), new=False),
    "synth/folder as --audio": Case(lambda w: ["synth", w.root / "y", "--audio", w.folder], USAGE, ("is a folder",),
                                    new=False),
    "synth/tiny --seconds": Case(lambda w: ["synth", w.root / "y", "--seconds", "0.01"], USAGE, ("--seconds",)),
    "synth/negative --seed": Case(lambda w: ["synth", w.root / "y", "--seed", "-1"], USAGE, ("--seed",)),
    "synth/--crf out of range": Case(lambda w: ["synth", w.root / "y", "--crf", "99"], USAGE, ("--crf",)),
    "synth/output is a file": Case(lambda w: ["synth", w.blocker], USAGE, ("is not a folder",)),
    # ------------------------------------------------------------------ demo and the rest
    "demo/--iterations 0 (with --quiet)": Case(lambda w: ["demo", "--engine-only", "--iterations", "0", "--quiet",
                                                          "-o", w.root / "d"], USAGE, ("--iterations",),
                                               issue="train and demo have no --quiet"),
    "demo/-o below a file": Case(lambda w: ["demo", "--engine-only", "-o", w.blocker / "d", "--iterations", "1"],
                                 RUNTIME, ("cannot create output folder", "-o"), new=False),
    "recipes/unknown name": Case(lambda w: ["recipes", "nerf"], USAGE, ("unknown recipe",)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_changes_nothing(name, w, capfd, monkeypatch):
    case = CASES[name]
    if "setup" in case.extra:
        case.extra["setup"](w)
    if case.no_load:
        _forbid_loading(monkeypatch)
    if case.patch is not None:
        case.patch(monkeypatch, w)
    argv = case.argv(w)
    capfd.readouterr()
    before = _snapshot(w)
    code, _, err = _run(capfd, argv)
    _assert_refused(code, err, argv[0], case.code, case.fragments)
    assert _snapshot(w) == before, "a refused command changed or left files"


# --------------------------------------------------------------------------------------- checkpoints
def _damaged_copy(w, tmp_path, damage, which: str = "all") -> Path:
    """A copy of the trained run with ``damage(checkpoint folder)`` applied to every checkpoint
    (``which="all"``) or only to the newest."""
    run = tmp_path / "run"
    shutil.copytree(w.run, run)
    checkpoints = sorted((run / "checkpoints").glob("step-*"))
    assert len(checkpoints) >= 2                       # keep_last=2: a fallback exists
    for folder in checkpoints if which == "all" else checkpoints[-1:]:
        damage(folder)
    return run


def _edit_meta(change):
    def damage(folder: Path) -> None:
        meta = json.loads((folder / "meta.json").read_text())
        (folder / "meta.json").write_text(json.dumps(change(meta)))
    return damage


def _wrong_types(meta: dict) -> dict:
    return {**meta, "step": "twelve", "progress": []}


def _wrong_config_type(meta: dict) -> dict:
    return {**meta, "config": {**meta["config"], "size": "big"}}


def _as_list(meta: dict) -> list:
    return [meta]


def _no_config(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k != "config"}


def _flip_bytes(folder: Path) -> None:
    """4 KB (or half the file) of the tensor data inverted, the header left intact."""
    path = folder / "tensors.safetensors"
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    n = min(4096, (len(data) - header) // 2)
    start = header + (len(data) - header - n) // 2
    data[start:start + n] = bytes(b ^ 0xFF for b in data[start:start + n])
    path.write_bytes(bytes(data))


def _nans_with_a_valid_digest(folder: Path) -> None:
    """10k NaNs written into the weights and the digest updated to match: only the finite check can tell."""
    from safetensors.numpy import load_file, save_file

    path = folder / "tensors.safetensors"
    tensors = load_file(str(path))
    left = 10_000
    for name in sorted(tensors):
        value = tensors[name]
        if left and value.dtype.kind == "f" and value.size:
            flat = value.reshape(-1).copy()
            k = min(left, flat.size)
            flat[:k] = np.nan
            tensors[name] = flat.reshape(value.shape)
            left -= k
    save_file(tensors, str(path))
    meta = json.loads((folder / "meta.json").read_text())
    meta["tensors_sha256"] = _sha256(path)
    (folder / "meta.json").write_text(json.dumps(meta))


DAMAGE = {
    "meta.json fields of wrong types": (_edit_meta(_wrong_types), ("field 'step'", "--restart"),
                                        "a checkpoint meta.json with wrong types: TypeError traceback"),
    "meta.json config field of a wrong type": (_edit_meta(_wrong_config_type),
                                               ("meta.json: config size must be an integer", "--restart"), ""),
    "meta.json is a list": (_edit_meta(_as_list), ("not a checkpoint description",),
                            "a checkpoint meta.json that is a list: AttributeError traceback"),
    "meta.json lacks config": (_edit_meta(_no_config), ("field 'config'",),
                               "a checkpoint meta.json without config: KeyError traceback"),
    "4 KB of flipped bytes": (_flip_bytes, ("is damaged", "digest"),
                              "4 KB of flipped bytes in the weights render without a word"),
    "10k NaNs": (_nans_with_a_valid_digest, ("NaN/inf",), "10k NaNs in the weights render without a word"),
}


@pytest.mark.parametrize("command", ["render", "train"])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_checkpoint_is_refused_in_one_line(damage, command, w, tmp_path, capfd):
    run = _damaged_copy(w, tmp_path, DAMAGE[damage][0])
    before = {str(p.relative_to(run)): _sha256(p) for p in run.rglob("*") if p.is_file()}
    out = tmp_path / "o.mp4"
    argv = (["render", w.subject, "--run", run, "--audio", w.speech, "-o", out, "--quiet"] if command == "render"
            else ["train", w.subject, "-o", run, "--quiet"])
    code, _, err = _run(capfd, argv)
    _assert_refused(code, err, command, RUNTIME, DAMAGE[damage][1])
    assert not out.exists() and not list(tmp_path.glob(".o.*"))
    assert {str(p.relative_to(run)): _sha256(p) for p in run.rglob("*") if p.is_file()} == before


def test_a_damaged_newest_checkpoint_falls_back_with_one_warning(w, tmp_path, capfd):
    run = _damaged_copy(w, tmp_path, _flip_bytes, which="newest")
    out = tmp_path / "o.mp4"
    code, stdout, err = _run(capfd, ["render", w.subject, "--run", run, "--audio", w.speech, "-o", out, "--quiet"])
    assert code == 0, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("talksplat render: warning: ") and "previous checkpoint" in lines[0]
    assert out.is_file() and "wrote" in stdout


# --------------------------------------------------------------------------------------- the rest
def test_a_killed_renders_temporary_is_removed_by_the_next_render(w, tmp_path, capfd):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()                                   # its pid names a writer that no longer runs
    stale = tmp_path / f".o.{dead.pid}.abc123.tmp.mp4"
    stale.write_bytes(b"half a video")
    code, _, err = _run(capfd, ["render", w.subject, "--audio", w.speech, "-o", tmp_path / "o.mp4", "--quiet"])
    assert code == 0 and err == "", err
    assert not stale.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["o.mp4"]




def test_a_video_without_a_face_is_one_line_even_from_mediapipe(w, tmp_path, capfd):
    """Runtime failure (exit 1) in exactly one line: MediaPipe's native log lines (written to file
    descriptor 2, some by native threads after the call returned) are kept out under --quiet."""
    code, _, err = _run(capfd, ["prepare", w.mute, "-o", tmp_path / "p", "--no-audio", "--quiet"])
    assert "Traceback" not in err, err
    _assert_refused(code, err, "prepare", RUNTIME, ("no face found", "one person facing the camera"))


def test_train_quiet_on_a_finished_run_writes_nothing_to_stderr(w, capfd):
    before = _snapshot(w)
    code, out, err = _run(capfd, ["train", w.subject, "--quiet"])
    assert code == 0 and err == "" and "trained talkinggaussian" in out
    after = _snapshot(w)
    # Nothing appears or goes and the checkpoints are byte-identical (summary.json is rewritten).
    assert after.keys() == before.keys()
    assert {k: v for k, v in after.items() if k.startswith("sha256:")} == \
        {k: v for k, v in before.items() if k.startswith("sha256:")}


@pytest.mark.parametrize("argv, code, fragment", [
    (["train", "/no/such/subject"], USAGE, "does not exist"),
    (["render", "s", "--audio", "a.wav", "-o", "o.mp4", "--bogus"], USAGE, "unrecognized arguments: --bogus"),
])
def test_the_console_script_exit_codes(argv, code, fragment):
    """The real process: exit code and one line, through ``python -m talksplat.cli.main``."""
    result = subprocess.run([sys.executable, "-m", "talksplat.cli.main", *argv], capture_output=True, text=True,
                            check=False, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == code, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in result.stderr, result.stderr


def test_the_corpus_covers_every_command_and_both_codes():
    """The table itself: every user-facing command has cases, and both exit codes occur."""
    commands = {name.split("/")[0] for name in CASES}
    assert {"prepare", "train", "render", "eval", "sync-train", "synth", "demo"} <= commands
    assert {case.code for case in CASES.values()} == {USAGE, RUNTIME}
