"""Checkpoints: tensors in safetensors (never pickle) plus a JSON file with config and progress.

A checkpoint is a folder ``<run>/checkpoints/step-<N>/`` holding ``tensors.safetensors`` and
``meta.json``. It is written into a temporary folder and renamed, so a crash never leaves a
half-written checkpoint, and ``latest`` finds the newest complete one. ``meta.json`` records the
sha256 of the tensors file; loading verifies it (a flipped byte is caught, not rendered), rejects
non-finite values, and validates the format version, the recipe name and every config field's type
before anything is used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from talksplat.engine.config import config_from_saved
from talksplat.errors import TalksplatError, UsageError

# 2: the engine's layout (Gaussian sets, named optimizers), the subject fingerprint and a tensors digest.
FORMAT_VERSION = 2


class DamagedCheckpoint(TalksplatError):
    """A checkpoint whose files are unreadable, inconsistent or corrupted (an older one may be fine)."""
TENSORS_FILE = "tensors.safetensors"
META_FILE = "meta.json"
STEP_PREFIX = "step-"


def save_checkpoint(folder: Path, step: int, tensors: dict[str, Tensor], *, recipe: str, config,
                    progress: dict | None = None, keep_last: int = 2, subject: dict | None = None) -> Path:
    """Atomically writes checkpoint ``step`` under ``folder``; keeps the newest ``keep_last``."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{STEP_PREFIX}{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=".tmp-"))
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / TENSORS_FILE))
        meta = {"format_version": FORMAT_VERSION, "recipe": recipe, "step": step,
                "config": dataclasses.asdict(config), "progress": progress or {}, "subject": subject or {},
                "tensors_sha256": _sha256(tmp / TENSORS_FILE)}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    for old in list_checkpoints(folder)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir()
             if p.name.startswith(STEP_PREFIX) and (p / META_FILE).exists() and (p / TENSORS_FILE).exists()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(folder: Path) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_meta(path: Path) -> dict:
    """A checkpoint's meta.json, checked for the fields and types every reader relies on."""
    where = path / META_FILE
    try:
        meta = json.loads(where.read_text())
    except (OSError, ValueError) as exc:
        raise DamagedCheckpoint(f"checkpoint {path} is unreadable ({exc})") from exc
    if not isinstance(meta, dict):
        raise DamagedCheckpoint(f"{where} is not a checkpoint description (a JSON object)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise TalksplatError(f"checkpoint {path} has format {meta.get('format_version')!r}, this talksplat "
                             f"reads {FORMAT_VERSION}; retrain with --restart or use the talksplat version that wrote it")
    expected = {"recipe": str, "step": int, "config": dict, "progress": dict, "tensors_sha256": str}
    for key, kind in expected.items():
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise DamagedCheckpoint(f"{where}: field {key!r} is missing or not a {kind.__name__}; the checkpoint "
                                 "is damaged")
    return meta


def load_checkpoint(path: Path, *, recipe: str | None, config_type) -> tuple[dict[str, Tensor], object, dict]:
    """Returns (tensors, config, meta). Raises TalksplatError naming what is wrong and the fix.
    ``recipe`` None accepts any recipe name (the caller dispatches on ``meta["recipe"]``)."""
    import torch

    meta = read_meta(path)
    if recipe is not None and meta["recipe"] != recipe:
        raise UsageError(f"checkpoint {path} was trained with recipe {meta['recipe']!r}, "
                         f"not {recipe!r}; pass --recipe {meta['recipe']} (or another run folder)")
    try:
        config = config_from_saved(config_type, meta["config"])
    except TalksplatError as exc:
        # Named as the checkpoint's damage (an older checkpoint may load), not as a bare setting error.
        raise DamagedCheckpoint(f"{path / META_FILE}: config {exc}; the checkpoint is damaged") from exc
    if _sha256(path / TENSORS_FILE) != meta["tensors_sha256"]:
        raise DamagedCheckpoint(f"checkpoint {path} is damaged (its tensors do not match the digest recorded "
                             "when it was written)")
    try:
        tensors = load_file(str(path / TENSORS_FILE))
    except (OSError, ValueError, SafetensorError) as exc:
        raise DamagedCheckpoint(f"checkpoint {path} is unreadable ({exc})") from exc
    for name, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise DamagedCheckpoint(f"checkpoint {path} holds NaN/inf values in {name}")
    return tensors, config, meta


def load_latest_valid(folder: Path, *, recipe: str | None, config_type, warn=None):
    """(path, tensors, config, meta) of the newest checkpoint in ``folder`` that loads; a damaged one is
    skipped with a warning (the previous one is used). None when there is no checkpoint; the newest
    error when every checkpoint is damaged."""
    import warnings

    found = list_checkpoints(folder)
    skipped: list[DamagedCheckpoint] = []
    for path in reversed(found):
        try:
            tensors, config, meta = load_checkpoint(path, recipe=recipe, config_type=config_type)
        except DamagedCheckpoint as exc:
            skipped.append(exc)
            continue
        # Warned only once an older checkpoint is used: when none loads, the error alone is the one line.
        for exc in skipped:
            (warn or warnings.warn)(f"{exc}; using the previous checkpoint ({path.name})")
        return path, tensors, config, meta
    first_error = skipped[0] if skipped else None
    if first_error is not None:
        raise DamagedCheckpoint(f"{first_error}, and no older checkpoint in {folder} loads; start over with "
                                "--restart") from first_error
    return None


def newest_readable_meta(folder: Path) -> dict | None:
    """meta.json of the newest checkpoint whose meta is readable (for dispatching on the recipe)."""
    for path in reversed(list_checkpoints(folder)):
        try:
            return read_meta(path)
        except DamagedCheckpoint:
            continue
    return None
