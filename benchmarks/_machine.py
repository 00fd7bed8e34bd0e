"""What every benchmark records about the machine it ran on (imported by the scripts beside it)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def compiler_version() -> str | None:
    from talksplat._native import find_compiler

    cxx = find_compiler()
    if cxx is None:
        return None
    result = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False)
    return result.stdout.splitlines()[0] if result.stdout else cxx


def machine_info() -> dict:
    import torch

    return {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_default_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "compiler": compiler_version(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
        # Other work on a 2-core machine distorts absolute times; compare ratios within one run.
        "load_average": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def save_result(path: Path, key: str, result: dict) -> None:
    """Stores ``result`` under ``key`` in the JSON file ``path``, keeping the other keys; called after
    each finished part, so a long run that dies keeps what it measured."""
    results = json.loads(path.read_text()) if path.exists() else {}
    results[key] = result
    path.write_text(json.dumps(results, indent=1, default=str))


def save_keyed_result(path: Path, key: str, result: dict) -> None:
    """Stores ``result`` under ``key`` in the JSON results file ``path``, keeping its other keys
    (earlier runs, other subjects), and says where it went."""
    results = json.loads(path.read_text()) if path.exists() else {}
    results[key] = result
    path.write_text(json.dumps(results, indent=1))
    print(f"wrote {path}")
