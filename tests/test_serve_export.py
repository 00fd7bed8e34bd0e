"""talksplat export: the canonical Gaussians as a standard 3DGS PLY, read back and compared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from talksplat.cli.main import main
from talksplat.serve.ply import PROPERTIES, SH_C0, read_ply

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def subject(tiny_demo) -> Path:
    return tiny_demo / "work" / "subject"


def test_export_writes_a_3dgs_ply_that_reads_back_as_the_canonical_gaussians(subject, tmp_path):
    from talksplat.recipes import load_avatar

    out = tmp_path / "head.ply"
    assert main(["export", str(subject), "-o", str(out)]) == 0
    header = out.read_bytes().split(b"end_header\n")[0].decode()
    assert header.startswith("ply\nformat binary_little_endian 1.0\n")
    assert [line.split()[2] for line in header.splitlines() if line.startswith("property")] == list(PROPERTIES)

    ply = read_ply(out)
    sets = load_avatar(subject).canonical_gaussians()
    expected = {k: np.concatenate([s[k].numpy() for s in sets.values()]) for k in next(iter(sets.values()))}
    n = len(expected["means"])
    assert len(ply["x"]) == n
    np.testing.assert_allclose(np.stack([ply["x"], ply["y"], ply["z"]], 1), expected["means"], atol=TOLERANCE)
    np.testing.assert_allclose(1 / (1 + np.exp(-ply["opacity"])), expected["opacities"], atol=1e-4)
    np.testing.assert_allclose(np.exp(np.stack([ply[f"scale_{i}"] for i in range(3)], 1)), expected["scales"],
                               rtol=1e-4)
    quats = np.stack([ply[f"rot_{i}"] for i in range(4)], 1)
    np.testing.assert_allclose(np.linalg.norm(quats, axis=1), 1.0, atol=1e-5)
    unit = expected["quats"] / np.linalg.norm(expected["quats"], axis=1, keepdims=True)
    np.testing.assert_allclose(quats, unit, atol=1e-5)
    colors = 0.5 + SH_C0 * np.stack([ply[f"f_dc_{i}"] for i in range(3)], 1)
    np.testing.assert_allclose(colors, expected["colors"], atol=1e-5)
    assert not np.any(np.stack([ply["nx"], ply["ny"], ply["nz"]]))

    mouth = tmp_path / "mouth.ply"
    assert main(["export", str(subject), "-o", str(mouth), "--set", "mouth"]) == 0
    assert len(read_ply(mouth)["x"]) == len(sets["mouth"]["means"])


def test_export_refuses_bad_outputs_and_sets(subject, tmp_path, capsys):
    assert main(["export", str(subject), "-o", str(tmp_path / "head.txt")]) == 2
    assert main(["export", str(subject), "-o", str(tmp_path / "missing" / "head.ply")]) == 2
    assert main(["export", str(subject), "-o", str(tmp_path / "head.ply"), "--set", "hair"]) == 2
    err = capsys.readouterr().err
    assert "must be a .ply" in err and "does not exist" in err and "no Gaussian set hair" in err
    assert not list(tmp_path.iterdir())
