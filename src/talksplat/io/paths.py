"""Input paths checked before anything is decoded: one-line errors that say what is wrong."""

from __future__ import annotations

import os
from pathlib import Path

from talksplat.errors import TalksplatError


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
        raise TalksplatError(f"{label}{path} is a folder; give the {kind} file itself")
    if not path.is_file():
        raise TalksplatError(f"{label}{path}: no such file")
    return path
