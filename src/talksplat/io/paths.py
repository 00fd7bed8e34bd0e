"""Input paths checked before anything is decoded: one-line errors that say what is wrong."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from talksplat.errors import TalksplatError, UsageError


def require_file(path: str | os.PathLike[str], kind: str = "input", label: str = "") -> Path:
    """``path`` as a Path if it is an existing file, else a one-line :class:`TalksplatError`.

    A folder is named as such (users pass the folder that holds the file, e.g. a subject folder as
    ``--audio``); "no such file" alone sent them looking for a typo.

    Args:
        kind: what the file should be ("video", "audio", ...), used in the message.
        label: the option that named it (e.g. ``"--audio "``), prefixed to the message.
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{label}{path} is a folder; give the {kind} file itself")
    if not path.is_file():
        raise UsageError(f"{label}{path}: no such file")
    return path


def require_writable_folder(folder: str | os.PathLike[str], label: str, fix: str) -> Path:
    """``folder`` as a Path if it is, or could be made, a folder we can write; creates nothing.

    Checked before anything slow is loaded, so an unwritable output fails in a second, not after
    minutes of work; the probe goes into the nearest folder that exists, so a refused command leaves
    no empty folders behind. A file in the way is a :class:`UsageError`; a folder that cannot be
    written (permissions, read-only mount) a :class:`TalksplatError`.

    Args:
        label: what the folder is ("run folder", "output folder"), used in the message.
        fix: what to do instead, e.g. ``"choose another with -o"``.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        problem = "is a file" if existing == folder else f"cannot be made: {existing} is a file"
        raise UsageError(f"{label} {folder} {problem}; {fix}")
    try:
        # A probe file, not os.access: access() answers for the real user id and ignores read-only mounts.
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise TalksplatError(f"cannot write the {label} {folder} ({exc.strerror or exc}); {fix}") from exc
    return folder
