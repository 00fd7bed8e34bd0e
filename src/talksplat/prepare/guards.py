"""Checks ``prepare`` makes before it writes anything, and its clean-up when a step refuses the input.

Kept apart from the pipeline so that every refusal is a one-line :class:`TalksplatError` decided up
front (issue 21): an unwritable output folder, and a subject whose trained runs belong to another video.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from talksplat.errors import TalksplatError, UsageError
from talksplat.prepare import layout as L

# Trained runs live in SUBJECT/runs/ (talksplat.engine.runs.RUNS_DIR). Checked by path: prepare sits
# below the engine and must not import it.
RUNS_DIR = "runs"


def warn(message: str) -> None:
    """Print a warning once, as one line on stderr (it used to go through both ``warnings`` and print)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def prepare_output_folder(root: Path) -> bool:
    """Create ``root`` if needed and prove it is writable; returns whether it was created.

    A probe file, not ``os.access``: access() answers for the real user id and ignores read-only mounts.
    """
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root} exists and is not a folder; give a folder for the subject")
    created = not root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as exc:
        if created:                 # the refusal leaves no empty folder behind
            remove_empty_folders(root)
        reason = exc.strerror or type(exc).__name__
        raise TalksplatError(f"cannot write to the subject folder {root} ({reason}); "
                             "choose a folder you can write to") from None
    return created


def _prepared_source_hash(root: Path) -> str | None:
    """sha256 of the video the dataset in ``root`` was prepared from, or None when there is none."""
    for rel in (L.SUBJECT_JSON, L.MEDIA_JSON):
        try:
            source = json.loads((root / rel).read_text()).get("source", {})
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(source, dict) and isinstance(source.get("sha256"), str):
            return source["sha256"]
    return None


def has_trained_runs(root: Path) -> bool:
    runs = root / RUNS_DIR
    return runs.is_dir() and any(runs.iterdir())


def refuse_other_video_over_runs(root: Path, source_hash: str, force: bool) -> None:
    """Refuse to replace a trained subject's dataset with another video's (the runs would then be
    driven by data they were not trained on), unless ``force``."""
    previous = _prepared_source_hash(root)
    if force or previous is None or previous == source_hash or not has_trained_runs(root):
        return
    raise UsageError(f"{root} has trained runs from another video; prepare this video into a new folder, "
                     "or pass --force to replace the dataset (the runs in it will no longer match)")


def remove_empty_folders(root: Path) -> None:
    """Remove ``root`` and the folders under it that are empty (what a refused first run leaves)."""
    if not root.is_dir():
        return
    for folder, _, _ in sorted(os.walk(root), key=lambda entry: -len(entry[0])):
        try:
            os.rmdir(folder)        # fails, harmlessly, on a folder that is not empty
        except OSError:
            pass
