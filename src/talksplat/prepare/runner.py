"""A small resumable step runner.

Each step writes its outputs atomically (temp file + rename), then a done-marker
``.steps/NAME.json`` recording a key (hash of the step's version, its config, the source video's
hash and the digests of the upstream steps' outputs) and the size + digest of every output.
On a re-run a step is skipped when its marker's key matches and every output is still there
with the recorded size and digest; otherwise (config changed, an upstream step was redone, an
output is missing, truncated or altered) it runs again, and so does everything downstream.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from talksplat.io.atomic import write_bytes_atomic

MARKER_DIR = ".steps"
DIGEST_CHUNK = 1 << 20   # large outputs are digested from their size, first and last MiB


def quick_digest(path: Path) -> str:
    """sha256 of the file's size, first and last MiB (whole small files): catches truncation
    and rewrites without reading multi-GB frame arrays."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with path.open("rb") as f:
        if size <= 2 * DIGEST_CHUNK:
            h.update(f.read())
        else:
            h.update(f.read(DIGEST_CHUNK))
            f.seek(size - DIGEST_CHUNK)
            h.update(f.read(DIGEST_CHUNK))
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a whole file (the source video's identity)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(DIGEST_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Step:
    """One pipeline step.

    run(runner) writes the files named in ``outputs`` (relative to the subject folder) and
    returns a JSON-able info dict (stored in the marker, e.g. figures for the report).
    ``outputs`` may be a callable evaluated after the step runs (for optional outputs).
    """

    name: str
    version: int
    run: Callable[[StepRunner], dict]
    outputs: list[str] | Callable[[], list[str]]
    depends: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)


class StepRunner:
    """Runs steps in order in ``root``, skipping those whose marker is valid."""

    def __init__(self, root: Path, source_hash: str, log: Callable[[str], None] = print) -> None:
        self.root = Path(root)
        self.source_hash = source_hash
        self.log = log
        self.info: dict[str, dict] = {}
        self.ran: list[str] = []
        self.skipped: list[str] = []
        self._markers: dict[str, dict] = {}

    def path(self, rel: str) -> Path:
        return self.root / rel

    def marker_path(self, name: str) -> Path:
        return self.root / MARKER_DIR / f"{name}.json"

    def _key(self, step: Step) -> str:
        upstream = {dep: self._markers[dep]["outputs"] for dep in step.depends}
        payload = json.dumps({"step": step.name, "version": step.version, "config": step.config,
                              "source": self.source_hash, "upstream": upstream}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def _valid_marker(self, step: Step, key: str) -> dict | None:
        mpath = self.marker_path(step.name)
        try:
            marker = json.loads(mpath.read_text())
        except (OSError, ValueError):
            return None
        if marker.get("key") != key:
            return None
        for rel, rec in marker.get("outputs", {}).items():
            p = self.path(rel)
            try:
                if p.stat().st_size != rec["size"] or quick_digest(p) != rec["digest"]:
                    return None
            except (OSError, KeyError, TypeError):
                return None
        return marker

    def run(self, step: Step, force: bool = False) -> dict:
        """Run ``step`` unless a valid marker says it is done; returns its info dict."""
        key = self._key(step)
        marker = None if force else self._valid_marker(step, key)
        if marker is not None:
            self._markers[step.name] = marker
            self.info[step.name] = marker.get("info", {})
            self.skipped.append(step.name)
            self.log(f"  {step.name}: up to date, skipped")
            return self.info[step.name]
        # Invalidate first: a crash mid-step must not leave an old marker next to new outputs.
        self.marker_path(step.name).unlink(missing_ok=True)
        start = time.perf_counter()
        info = step.run(self) or {}
        seconds = time.perf_counter() - start
        outputs = step.outputs() if callable(step.outputs) else step.outputs
        records = {}
        for rel in outputs:
            p = self.path(rel)
            records[rel] = {"size": p.stat().st_size, "digest": quick_digest(p)}
        marker = {"step": step.name, "version": step.version, "key": key, "outputs": records,
                  "info": info, "seconds": round(seconds, 3), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_bytes_atomic(self.marker_path(step.name), json.dumps(marker, indent=1).encode())
        self._markers[step.name] = marker
        self.info[step.name] = info
        self.ran.append(step.name)
        return info

    def seconds(self, name: str) -> float:
        return float(self._markers.get(name, {}).get("seconds", 0.0))


def write_json_atomic(path: Path, data: object) -> Path:
    """JSON (indented, keys in insertion order) written atomically."""
    return write_bytes_atomic(path, (json.dumps(data, indent=1) + "\n").encode())


def remove_if_exists(path: Path) -> None:
    if path.exists():
        os.remove(path)
