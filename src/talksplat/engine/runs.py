"""Run folders: where a run lives, which run a path means, and whether it still fits its subject.

A run is ``<subject>/runs/<recipe>/`` by default (``-o`` chooses another folder); its checkpoints
record the recipe, the config and the subject's fingerprint (``data.subject_fingerprint``).
"""

from __future__ import annotations

from pathlib import Path

from talksplat.data.subject import subject_fingerprint
from talksplat.engine.checkpoint import latest_checkpoint, newest_readable_meta
from talksplat.errors import TalksplatError, UsageError

RUNS_DIR = "runs"


def default_run_dir(subject_dir: Path, recipe: str) -> Path:
    return Path(subject_dir) / RUNS_DIR / recipe


def is_run(path: Path) -> bool:
    return (Path(path) / "checkpoints").is_dir()


def subject_of_run(run: Path, meta: dict) -> Path:
    """The subject a run was trained on: the run's grandparent for the default layout, else the
    path recorded in the checkpoint."""
    run = Path(run)
    if run.parent.name == RUNS_DIR and (run.parent.parent / "subject.json").is_file():
        return run.parent.parent
    recorded = (meta.get("subject") or {}).get("path")
    if recorded and (Path(recorded) / "subject.json").is_file():
        return Path(recorded)
    raise UsageError(f"cannot tell which subject run {run} was trained on; pass the subject folder "
                     "and --run RUN")


def resolve_run(path: Path, recipe: str | None = None, run: Path | None = None) -> tuple[Path, Path]:
    """(subject folder, run folder) for what a user passed: a subject (its only run, or the run of
    ``recipe``), a subject plus ``run``, or a run folder."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path} does not exist; give a prepared subject folder or a run folder")
    if not path.is_dir():
        raise UsageError(f"{path} is a file; give a prepared subject folder or a run folder")
    if run is not None:
        return path, Path(run)
    if is_run(path) and not (path / "subject.json").is_file():
        meta = newest_readable_meta(path / "checkpoints") or {}
        return subject_of_run(path, meta), path
    if not (path / "subject.json").is_file():
        raise UsageError(f"{path} is not a prepared subject (no subject.json) nor a run; run "
                         f"`talksplat prepare VIDEO -o {path}` and `talksplat train {path}` first")
    if recipe is not None:
        return path, default_run_dir(path, recipe)
    runs = sorted(p for p in (path / RUNS_DIR).glob("*") if latest_checkpoint(p / "checkpoints"))
    if not runs:
        raise UsageError(f"no trained model in {path / RUNS_DIR}; run `talksplat train {path}` first")
    if len(runs) > 1:
        names = ", ".join(p.name for p in runs)
        raise UsageError(f"{path} has several trained runs ({names}); choose one with --recipe NAME or --run DIR")
    return path, runs[0]


def check_fingerprint(recorded: dict, subject_dir: Path, fix: str) -> None:
    """TalksplatError when the subject was re-prepared from another video since the run started."""
    if not recorded:
        return
    current = subject_fingerprint(subject_dir)
    changed = [k for k in ("source_sha256", "n_frames", "format_version")
               if recorded.get(k) is not None and recorded.get(k) != current.get(k)]
    if changed:
        what = "another video" if "source_sha256" in changed else f"other data ({', '.join(changed)} changed)"
        raise TalksplatError(f"subject {subject_dir} was re-prepared from {what} after this run was trained; "
                             f"the model does not fit it: {fix}")
