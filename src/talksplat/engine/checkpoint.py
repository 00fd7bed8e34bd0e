"""Checkpoints: tensors in safetensors (never pickle) plus a JSON file with config and progress.

A checkpoint is a folder ``<run>/checkpoints/step-<N>/`` holding ``tensors.safetensors`` and
``meta.json``. It is written into a temporary folder and renamed, so a crash never leaves a
half-written checkpoint, and ``latest`` finds the newest complete one. Loading validates the format
version, the recipe name and the config before anything is used.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import typing
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from talksplat.errors import TalksplatError

FORMAT_VERSION = 1
TENSORS_FILE = "tensors.safetensors"
META_FILE = "meta.json"
STEP_PREFIX = "step-"


def save_checkpoint(folder: Path, step: int, tensors: dict[str, Tensor], *, recipe: str, config,
                    progress: dict | None = None, keep_last: int = 2) -> Path:
    """Atomically writes checkpoint ``step`` under ``folder``; keeps the newest ``keep_last``."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{STEP_PREFIX}{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=".tmp-"))
    try:
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(tmp / TENSORS_FILE))
        meta = {"format_version": FORMAT_VERSION, "recipe": recipe, "step": step,
                "config": dataclasses.asdict(config), "progress": progress or {}}
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


def load_checkpoint(path: Path, *, recipe: str, config_type) -> tuple[dict[str, Tensor], object, dict]:
    """Returns (tensors, config, meta). Raises TalksplatError naming what is wrong and the fix."""
    try:
        meta = json.loads((path / META_FILE).read_text())
        tensors = load_file(str(path / TENSORS_FILE))
    except (OSError, ValueError, SafetensorError) as exc:
        raise TalksplatError(f"checkpoint {path} is unreadable ({exc}); delete it to fall back "
                             "to the previous one") from exc
    if meta.get("format_version") != FORMAT_VERSION:
        raise TalksplatError(f"checkpoint {path} has format {meta.get('format_version')}, this talksplat "
                             f"reads {FORMAT_VERSION}; retrain or use the talksplat version that wrote it")
    if meta.get("recipe") != recipe:
        raise TalksplatError(f"checkpoint {path} was trained with recipe {meta.get('recipe')!r}, "
                             f"not {recipe!r}; pass --recipe {meta.get('recipe')}")
    return tensors, config_from_dict(config_type, meta["config"]), meta


def config_from_dict(config_type, values: dict):
    """Rebuilds a (nested) dataclass from its ``asdict`` form, rejecting unknown keys."""
    hints = typing.get_type_hints(config_type)
    unknown = set(values) - {f.name for f in dataclasses.fields(config_type)}
    if unknown:
        raise TalksplatError(f"config has unknown keys {sorted(unknown)} for {config_type.__name__}; "
                             "it was written by a different talksplat version")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = config_from_dict(hint, value)
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            value = tuple(value)  # JSON has no tuples
        kwargs[name] = value
    return config_type(**kwargs)
