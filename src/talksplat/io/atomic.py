"""Atomic file output: write to a temporary file beside the target, then ``os.replace`` it into place."""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:     # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Deletes temporaries of ``target`` left by a process that was killed (``kill -9`` gives no
    chance to clean up): their names carry the writer's pid, and that process no longer exists."""
    removed = []
    for tmp in target.parent.glob(f".{glob.escape(target.stem)}.*.tmp{target.suffix}"):
        parts = tmp.name[len(target.stem) + 2:].split(".")
        if len(parts) >= 2 and parts[0].isdigit() and not _pid_alive(int(parts[0])):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success move it onto ``path`` atomically.

    The temporary name keeps the target's suffix (muxers pick the container from it) and carries
    this process's pid, so temporaries of a killed writer are recognised and removed by the next
    write of the same file. If the body raises, the temporary file is removed and ``path`` is left
    untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.{os.getpid()}.", suffix=f".tmp{target.suffix}",
                                    dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
