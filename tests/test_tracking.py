"""Tracking parts: template, PnP / focal search, jitter, crop mapping, subject choice, masks, step runner."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from talksplat.core.labels import INSIDE_MOUTH, SKIN
from talksplat.prepare.runner import Step, StepRunner
from talksplat.tracking import pose as P
from talksplat.tracking.crop import CropBox, compute_crop_box, crop_to_source, source_to_crop
from talksplat.tracking.masks import closed_mouth_corrected_lips, fill_polygon, label_map
from talksplat.tracking.subject import choose_subject, interpolate_gaps, longest_gap
from talksplat.tracking.template import load_canonical_template

W = H = 512
FOCAL = 1000.0


def _motion(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, n)
    rotvec = np.stack([0.08 * np.sin(t), 0.12 * np.sin(1.3 * t + 1), 0.05 * np.cos(t)], axis=1)
    rot = Rotation.from_rotvec(rotvec).as_matrix()
    trans = np.stack([5 * np.sin(t), 3 * np.cos(t), 650 + 10 * np.sin(0.5 * t)], axis=1) + rng.normal(0, 0.1, (n, 3))
    return rot, trans


def test_template_is_metric_and_right_handed():
    tpl = load_canonical_template()
    v = tpl.vertices
    assert v.shape == (468, 3)
    assert 80 < tpl.eye_corner_distance_mm < 100            # an adult face, in millimetres
    assert v[263, 0] > v[33, 0] and v[152, 1] > v[10, 1]     # x to the subject's left, y down
    assert v[1, 2] < v[234, 2] - 50                          # the nose tip is far in front of the cheeks
    assert np.allclose(0.5 * (v[234] + v[454]), 0)
    assert tpl.weights[13] < 0.5 and tpl.weights[1] == 1.0   # lips down-weighted, nose rigid


def test_refine_poses_recovers_exact_poses():
    tpl = load_canonical_template()
    rot, trans = _motion()
    K = P.intrinsics_matrix(FOCAL, W, H)
    uv = P.project(tpl.vertices, rot, trans, K)
    r0, t0 = P.initial_poses(uv + 0.3, tpl.vertices, tpl.weights, K)       # a slightly wrong start
    obs = P.Observations.from_landmarks(uv, tpl.vertices, tpl.weights)
    r, t = P.refine_poses(obs, r0, t0, K)
    ang = np.degrees(np.linalg.norm(Rotation.from_matrix(r @ np.transpose(rot, (0, 2, 1))).as_rotvec(), axis=1))
    assert ang.max() < 1e-3 and np.abs(t - trans).max() < 1e-2


def test_focal_search_with_the_right_template():
    tpl = load_canonical_template()
    rot, trans = _motion(40)
    uv = P.project(tpl.vertices, rot, trans, P.intrinsics_matrix(FOCAL, W, H))
    uv += np.random.default_rng(1).normal(0, 0.2, uv.shape)
    found = P.search_focal(uv, tpl.vertices, tpl.weights, W, H)
    assert abs(found.focal / FOCAL - 1) < 0.05 and not found.at_edge


def test_jitter_measures_shaking_not_smooth_motion():
    rot, _ = _motion(100)
    shaky = Rotation.from_rotvec(np.random.default_rng(2).normal(0, np.radians(0.5), (100, 3))).as_matrix() @ rot
    assert P.rotation_jitter_deg(rot) < 0.05
    assert P.rotation_jitter_deg(shaky) > 0.5


def test_crop_mapping_round_trip():
    lms = np.random.default_rng(3).uniform(300, 500, (10, 478, 3))
    box = compute_crop_box(lms, 1280, 720, 256)
    assert box.side <= 720 and 0 <= box.x0 <= 1280 - box.side and 0 <= box.y0 <= 720 - box.side
    uv = np.random.default_rng(4).uniform(0, 700, (5, 2))
    assert np.allclose(crop_to_source(source_to_crop(uv, box), box), uv)
    # Pixel-centre convention: the centre of the box's first pixel block maps to the crop's (0, 0) area.
    b = CropBox(10, 20, 100, 50)
    assert np.allclose(source_to_crop(np.array([10.5, 20.5]), b), [0.0, 0.0])


def test_choose_subject_follows_the_consistent_face():
    big = np.zeros((478, 3), np.float32)
    big[:, :2] = np.random.default_rng(5).uniform(100, 300, (478, 2))
    small = big.copy()
    small[:, :2] = small[:, :2] * 0.2 + 600
    frames = [[big + i, small] if i % 3 else [small, big + i] for i in range(12)]
    frames[5] = []
    track = choose_subject(frames)
    assert track.detected.sum() == 11 and not track.detected[5]
    assert track.multi_face_frames == 11
    assert np.allclose(track.landmarks[7], big + 7)          # the big face, whatever its order
    filled = interpolate_gaps(track.landmarks, track.detected)
    assert np.allclose(filled[5], big + 5) and longest_gap(track.detected) == 1


def test_fill_polygon_labels_pixels_by_their_centres():
    m = np.zeros((8, 8), np.uint8)
    fill_polygon(m, np.array([[0.6, 0.6], [3.4, 0.6], [3.4, 2.4], [0.6, 2.4]]), 5)
    assert sorted(map(tuple, np.argwhere(m))) == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    assert set(np.unique(m)) == {0, 5}
    # Unbiased area at any sub-pixel position (cv2.fillPoly adds ~half a pixel all round).
    rng = np.random.default_rng(0)
    ang = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    ellipse = np.stack([12 * np.cos(ang), 3 * np.sin(ang)], axis=1)      # a mouth-like opening
    area = 0.5 * abs(np.dot(ellipse[:, 0], np.roll(ellipse[:, 1], 1)) - np.dot(ellipse[:, 1], np.roll(ellipse[:, 0], 1)))
    counts = []
    for _ in range(50):
        m = np.zeros((32, 32), np.uint8)
        fill_polygon(m, ellipse + 16 + rng.uniform(-0.5, 0.5, 2), 1)
        counts.append(m.sum())
    assert abs(np.mean(counts) / area - 1) < 0.03
    # A sliver thinner than a pixel labels about its area, not a full row of pixels.
    m = np.zeros((16, 32), np.uint8)
    fill_polygon(m, np.array([[4.0, 8.1], [28.0, 8.1], [28.0, 8.3], [4.0, 8.3]]), 1)
    assert m.sum() == 0
    # Partly outside the image: clipped.
    m = np.zeros((8, 8), np.uint8)
    fill_polygon(m, np.array([[-5.0, -5.0], [20.0, -5.0], [20.0, 20.0], [-5.0, 20.0]]), 1)
    assert m.all()


def test_label_map_from_ground_truth_landmarks(tmp_path):
    from talksplat.synthetic import SynthConfig, generate, load_ground_truth

    res = generate(SynthConfig.tiny(seed=2, use_phones=False), tmp_path / "s")
    gt = load_ground_truth(res.out_dir)
    t = int(np.argmax(gt["mouth_open_px"]))
    lm = np.zeros((478, 2))
    lm[:468] = gt["landmarks_2d"][t]
    person = (gt["labels"][t] > 0).astype(np.float32)
    labels = label_map(lm, person)
    truth_mouth = gt["labels"][t] == 8
    mouth = labels == INSIDE_MOUTH
    assert (mouth & truth_mouth).sum() / (mouth | truth_mouth).sum() > 0.65    # 0.74 (0.5-0.6 with cv2.fillPoly)
    face_truth = np.isin(gt["labels"][t], (4, 5, 6, 7, 8))
    assert ((labels >= SKIN) & face_truth).sum() / ((labels >= SKIN) | face_truth).sum() > 0.85
    # Removing the resting gap never makes the mouth polygon taller than the raw landmarks'.
    seq = np.zeros((gt["landmarks_2d"].shape[0], 478, 2))
    seq[:, :468] = gt["landmarks_2d"]
    lips = closed_mouth_corrected_lips(seq)
    raw_gap = np.linalg.norm(seq[:, 14] - seq[:, 13], axis=1)
    new_gap = np.linalg.norm(lips[:, 5] - lips[:, 15], axis=1)
    assert np.all(new_gap <= raw_gap + 1e-9)


def test_runner_skips_valid_and_redoes_corrupt(tmp_path):
    calls = []

    def write(runner):
        calls.append(1)
        runner.path("out.txt").write_text("x" * 100)
        return {"n": len(calls)}

    def step(cfg):
        return Step("a", 1, write, ["out.txt"], [], cfg)

    StepRunner(tmp_path, "src").run(step({"k": 1}))
    StepRunner(tmp_path, "src").run(step({"k": 1}))
    assert len(calls) == 1
    (tmp_path / "out.txt").write_text("y" * 100)               # same size, different content
    StepRunner(tmp_path, "src").run(step({"k": 1}))
    assert len(calls) == 2
    StepRunner(tmp_path, "src").run(step({"k": 2}))            # config changed
    assert len(calls) == 3
    StepRunner(tmp_path, "other-source").run(step({"k": 2}))   # another video
    assert len(calls) == 4
    marker = json.loads((tmp_path / ".steps" / "a.json").read_text())
    assert marker["info"] == {"n": 4}

    def boom(runner):
        raise RuntimeError("crash mid-step")

    with pytest.raises(RuntimeError):
        StepRunner(tmp_path, "other-source").run(Step("a", 1, boom, ["out.txt"], [], {"k": 3}))
    assert not (tmp_path / ".steps" / "a.json").exists()       # no stale marker after a crash


def test_native_stderr_silenced_drops_descriptor_writes_only_inside(capfd):
    from talksplat.tracking.native_log import native_stderr_silenced

    with native_stderr_silenced():
        os.write(2, b"W0000 native noise\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


def test_mediapipe_native_log_lines_do_not_reach_stderr():
    # In a fresh process: MediaPipe logs its "INFO: Created TensorFlow Lite XNNPACK delegate" and
    # "W0000 ... inference_feedback_manager.cc" lines once per process, from native threads, to fd 2.
    code = ("import numpy as np\n"
            "from talksplat.tracking.facemesh import FaceMeshTracker\n"
            "from talksplat.tracking.masks import PersonSegmenter\n"
            "img = np.full((96, 96, 3), 120, np.uint8)\n"
            "with FaceMeshTracker() as t, PersonSegmenter() as s:\n"
            "    t.process(img); s(img)\n"
            "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-500:]
    noise = [line for line in result.stderr.splitlines()
             if re.match(r"(INFO|WARNING): |[IWE]\d{4} ", line)]
    assert not noise, noise
