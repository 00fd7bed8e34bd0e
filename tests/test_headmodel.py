"""The bundled head model (ICT-FaceKit), its MediaPipe correspondence, the landmark fit and the
prepare step. Needs nothing outside the repository (the model ships in the package)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talksplat.features.expression import CORE_NAMES
from talksplat.headmodel import (
    FitConfig,
    core_coefficients,
    default_landmark_basis,
    fit_sequence,
    load_correspondence,
    load_head_model,
    mesh_vertices,
    mouth_opening_mm,
)
from talksplat.headmodel.fit import (
    _bounded_newton_step,
    _gauss_newton_expressions,
    _Problem,
    project,
    so3_exp,
)
from talksplat.headmodel.model import ASSET_DIR

MOVES_PX = 2.0          # a blendshape "moves landmarks" when weight 1 shifts one by this much
RECOVERY_TOLERANCE = 0.05


def test_model_shapes_units_and_licence():
    m = load_head_model()
    v = m.neutral.shape[0]
    assert m.identity_basis.shape[1:] == (v, 3) and m.expression_basis.shape == (53, v, 3)
    assert len(m.expression_names) == 53 and "jawOpen" in m.expression_names
    assert m.triangles.max() < v and m.triangles.shape[1] == 3
    face = m.neutral[m.region("face")]
    width = face[:, 0].max() - face[:, 0].min()
    assert 150 < width < 300                                   # millimetres, not centimetres
    # Head frame: the subject's left eyeball at +x, the eyes above (smaller y than) the mouth, the face at -z.
    left, right = m.neutral[m.region("eyeball_left")].mean(0), m.neutral[m.region("eyeball_right")].mean(0)
    mouth = m.neutral[m.region("teeth")].mean(0)
    assert left[0] > 0 > right[0] and left[1] < mouth[1] and left[2] < 0
    assert "MIT License" in (ASSET_DIR / "LICENSE-ICT-FaceKit").read_text()


def test_correspondence_sanity():
    m, corr = load_head_model(), load_correspondence()
    assert corr.triangle.shape == (478, 3) and np.allclose(corr.barycentric.sum(1), 1, atol=1e-5)
    assert corr.barycentric.min() >= -1e-6
    surface, iris = corr.triangle[:468], corr.triangle[468:]
    assert surface.max() < m.regions["face"][1]
    eyeballs = m.regions["eyeball_left"][0], m.regions["eyeball_right"][1]
    assert iris.min() >= eyeballs[0] and iris.max() < eyeballs[1]
    assert np.sqrt(np.mean(np.square(corr.info["info_distance_mm"]))) < 1.0   # canonical face fit
    pts = corr.points(m.vertices())
    assert pts[33, 0] < 0 < pts[263, 0]                        # right eye corner on the subject's right
    assert pts[13, 1] < pts[14, 1] < pts[152, 1]               # upper lip above lower lip above chin
    jaw = corr.points(m.vertices(expression=_one_hot(m, "jawOpen"))) - pts
    assert np.linalg.norm(jaw[14]) > 5 * np.linalg.norm(jaw[13])   # lower lip rides the jaw
    blink = corr.points(m.vertices(expression=_one_hot(m, "eyeBlink_R"))) - pts
    assert np.linalg.norm(blink[159]) > 2 * np.linalg.norm(blink[145])   # upper lid closes


def test_gaze_turns_the_irises():
    m, b = load_head_model(), default_landmark_basis()
    base = b.points(torch.zeros(m.num_identity), torch.zeros(1, 53))[0]
    out = b.points(torch.zeros(m.num_identity), torch.tensor(_one_hot(m, "eyeLookOut_L"))[None])[0]
    assert out[473, 0] - base[473, 0] > 3.0                    # left iris moves to the subject's left (mm)
    assert torch.allclose(out[468], base[468])                 # the right eye did not move
    mesh = mesh_vertices(m, torch.zeros(m.num_identity), torch.tensor(_one_hot(m, "eyeLookUp_R"))[None])[0]
    ball = m.region("eyeball_right")
    assert mesh[ball, 1].mean() == pytest.approx(float(m.neutral[ball, 1].mean()), abs=0.5)   # turns, not shifts
    pupil = load_correspondence().triangle[468, 0]
    assert mesh[pupil, 1] < m.neutral[pupil, 1] - 3.0                                      # looks up (y down)


def _one_hot(m, name: str) -> np.ndarray:
    e = np.zeros(53, np.float32)
    e[m.expression_index(name)] = 1.0
    return e


def _synthetic_sequence(frames: int = 40, seed: int = 0):
    """Landmarks rendered from the bundled model with known identity, expressions and poses."""
    b = default_landmark_basis()
    names = b.expression_names
    rng = np.random.default_rng(seed)
    ident = np.zeros(b.identity.shape[0], np.float32)
    ident[:10] = rng.normal(0, 0.7, 10)
    expr = np.zeros((frames, 53), np.float32)
    t = np.arange(frames)
    for k, (name, amp) in enumerate((("jawOpen", 0.4), ("eyeBlink_L", 0.8), ("eyeBlink_R", 0.7),
                                     ("browInnerUp_L", 0.5), ("mouthSmile_L", 0.5), ("browDown_R", 0.5),
                                     ("mouthPucker", 0.5), ("eyeLookOut_L", 0.3), ("eyeLookIn_R", 0.3))):
        expr[:, names.index(name)] = amp * (0.5 + 0.5 * np.sin(2 * np.pi * t / frames * (1 + k % 3) + k))
    rot = so3_exp(torch.tensor(rng.normal(0, 0.08, (frames, 3)), dtype=torch.float32)).double().numpy()
    trans = np.array([0.0, 0.0, 600.0]) + rng.normal(0, 5, (frames, 3))
    K = np.array([[1000.0, 0, 255.5], [0, 1000.0, 255.5], [0, 0, 1]])
    pts = b.points(torch.tensor(ident), torch.tensor(expr))
    cam = torch.einsum("tij,tnj->tni", torch.tensor(rot, dtype=torch.float32), pts) + torch.tensor(trans, dtype=torch.float32)[:, None]
    uv = np.zeros((frames, 478, 2))
    uv[:, b.mediapipe_index.numpy()] = project(cam, torch.tensor(K, dtype=torch.float32)).numpy()
    return b, ident, expr, rot, trans, K, uv


def test_known_answer_recovers_weights():
    torch.manual_seed(0)
    b, ident, expr, rot, trans, K, uv = _synthetic_sequence()
    # A weak ridge: this checks the solver (the default ridge is tuned for noisy tracked landmarks and
    # shrinks small weights on purpose) and no landmark offsets (rendered landmarks sit exactly on the model).
    fit = fit_sequence(b, uv, K, rot, trans, cfg=FitConfig(expression_ridge=0.3, offset_prior=0.0))
    assert fit.expression.shape == expr.shape and fit.expression.min() >= 0 and fit.expression.max() <= 1
    # Which blendshapes move some landmark by >= MOVES_PX at weight 1 (the others are unobservable).
    base = b.points(torch.tensor(ident), torch.zeros(1, 53))[0]
    f_over_z = K[0, 0] / trans[:, 2].mean()
    moves = [float((b.points(torch.tensor(ident), torch.eye(53)[j:j + 1])[0] - base).norm(dim=-1).max()) * f_over_z
             >= MOVES_PX for j in range(53)]
    err = np.abs(fit.expression - expr).max(axis=0)
    assert sum(moves) > 40
    bad = {b.expression_names[j]: round(float(err[j]), 3) for j in range(53) if moves[j] and err[j] > RECOVERY_TOLERANCE}
    assert not bad, bad
    assert float(fit.landmark_error_px.mean()) < 0.2
    assert np.degrees(np.arccos(np.clip((np.trace(fit.rotation @ rot.transpose(0, 2, 1), axis1=1, axis2=2) - 1) / 2,
                                        -1, 1))).max() < 0.5


def test_bounded_newton_step_matches_a_reference_solver():
    from scipy.optimize import lsq_linear

    rng = np.random.default_rng(0)
    n, active = 8, 0
    for _ in range(10):
        m = rng.normal(size=(20, n))
        H, g, x0 = m.T @ m + 0.1 * np.eye(n), rng.normal(size=n) * 5, rng.uniform(0, 1, n)
        out = _bounded_newton_step(*(torch.tensor(a[None], dtype=torch.float64) for a in (H, g, x0)))[0].numpy()
        chol = np.linalg.cholesky(H)       # q(x) = |chol^T (x - x0) + chol^-1 g|^2 / 2 + const
        ref = x0 + lsq_linear(chol.T, -np.linalg.solve(chol, g), bounds=(-x0, 1 - x0)).x
        assert out.min() >= 0 and out.max() <= 1
        assert np.abs(out - ref).max() < 1e-6
        active += int(((ref <= 1e-9) | (ref >= 1 - 1e-9)).sum())
    assert active >= 10                                              # bounds were active (not just free solves)


def test_gauss_newton_solve_recovers_expressions_in_one_call():
    b, ident, expr, rot, trans, K, uv = _synthetic_sequence(frames=12)
    cfg = FitConfig(expression_ridge=0.01, expression_smooth=0.0)
    frame_weight = np.ones(len(uv))
    frame_weight[5] = 0.0                       # a frame that does not count: solvable, left where it was
    problem = _Problem(b, uv, K, rot, trans, frame_weight, cfg)
    params = {"identity": torch.tensor(ident), "expression": torch.zeros(len(uv), 53), "w_const": torch.zeros(3),
              "t_const": torch.zeros(3), "w_dev": torch.zeros(len(uv), 3), "t_dev": torch.zeros(len(uv), 3),
              "offsets": torch.zeros(b.mean.shape)}
    out, same_identity = _gauss_newton_expressions(problem, params, rounds=3)
    assert torch.equal(same_identity, params["identity"])
    names = b.expression_names
    # The generating shapes come back from zero without a single gradient step (gaze through its
    # finite difference), and the shapes not used stay near 0.
    assert torch.isfinite(out).all() and float(out[5].abs().max()) < 1e-4
    counted = np.flatnonzero(frame_weight > 0)
    for name in ("jawOpen", "eyeBlink_L", "mouthSmile_L", "browDown_R", "eyeLookOut_L"):
        j = names.index(name)
        assert np.abs(out[counted, j].numpy() - expr[counted, j]).max() < 0.02, name
    unused = expr.max(0) == 0
    assert float(out[counted][:, torch.from_numpy(unused)].mean()) < 0.01


def test_mouth_opening_is_the_models_lip_gap():
    m, b = load_head_model(), default_landmark_basis()
    ident = np.zeros(m.num_identity, np.float32)
    e = np.zeros((3, 53), np.float32)
    e[1, m.expression_index("jawOpen")] = 0.5
    e[2, m.expression_index("jawOpen")] = 1.0
    gap = mouth_opening_mm(b, ident, e)
    assert gap.shape == (3,) and 0 < gap[0] < 5                        # the neutral lips' inner rims (mm)
    assert gap[2] > gap[0] + 25.0                                      # the jaw drops the lower lip
    assert gap[1] - gap[0] == pytest.approx(0.5 * (gap[2] - gap[0]), rel=1e-4)   # linear in the weights
    funnel = np.zeros((1, 53), np.float32)
    funnel[0, m.expression_index("mouthFunnel")] = 1.0
    assert mouth_opening_mm(b, ident, funnel)[0] > gap[0] + 5.0          # lips part without the jaw too


def test_core_coefficients_average_inner_brows():
    m = load_head_model()
    e = np.zeros((2, 53), np.float32)
    e[0, m.expression_index("browInnerUp_L")] = 0.6
    e[1, m.expression_index("eyeBlink_L")] = 0.9
    core = core_coefficients(e, m.expression_names)
    assert core.shape == (2, 7)
    assert core[0, CORE_NAMES.index("browInnerUp")] == pytest.approx(0.3)
    assert core[1, CORE_NAMES.index("eyeBlinkLeft")] == pytest.approx(0.9)
    assert core[1, CORE_NAMES.index("eyeBlinkRight")] == 0.0


# ---------------------------------------------------------------------------------------------
# The prepare step on the tiny synthetic subject (shared fixtures of test_prepare).
@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from talksplat.prepare import PrepareConfig, prepare
    from talksplat.synthetic import SynthConfig, generate

    synth = generate(SynthConfig.tiny(seed=1, seconds=5.6, use_phones=False), tmp_path_factory.mktemp("synth"))
    result = prepare(synth.video, tmp_path_factory.mktemp("subject") / "s", PrepareConfig(size=128), quiet=True)
    return synth, result


def test_prepare_writes_face_model(prepared):
    from talksplat.features.expression import blink_events, match_events
    from talksplat.prepare.face_model import FACE_MODEL

    synth, result = prepared
    n = result.n_frames
    with np.load(result.subject_dir / FACE_MODEL) as f:
        data = {k: f[k] for k in f.files}
    assert data["expression"].shape == (n, 53) and data["expression_names"].shape == (53,)
    assert data["expression"].min() >= 0 and data["expression"].max() <= 1
    assert data["identity"].ndim == 1 and data["rotation"].shape == (n, 3, 3) and data["translation"].shape == (n, 3)
    assert data["core7"].shape == (n, 7) and list(data["core7_names"]) == list(CORE_NAMES)
    assert float(data["landmark_error_px"].mean()) < 1.0            # at 128^2
    names = [str(s) for s in data["expression_names"]]
    gt = np.load(synth.out_dir / "ground_truth.npz")
    jaw = data["expression"][:, names.index("jawOpen")]
    assert np.corrcoef(jaw, gt["mouth_open_mm"][:n])[0, 1] > 0.8
    assert data["mouth_open_mm"].shape == (n,)
    assert np.corrcoef(data["mouth_open_mm"], gt["mouth_open_mm"][:n])[0, 1] > 0.9
    blink = data["expression"][:, [names.index("eyeBlink_L"), names.index("eyeBlink_R")]].mean(1)
    truth = blink_events(0.5 * (gt["blink_left"][:n] + gt["blink_right"][:n]), 0.5)
    found = blink_events(blink / max(float(blink.max()), 1e-6))
    assert match_events(found, truth, 1) >= truth.size - 1
    summary = result.summary["face_model"]
    assert summary["landmark_error_px"] == pytest.approx(float(data["landmark_error_px"].mean()), rel=1e-5)
    # The mesh rebuilt from the stored arrays lands on the tracked landmarks.
    lms = np.load(result.subject_dir / "landmarks.npy")
    b = default_landmark_basis()
    pts = b.points(torch.tensor(data["identity"]), torch.tensor(data["expression"][:1]),
                   torch.tensor(data["landmark_offsets"]))
    cam = torch.einsum("ij,nj->ni", torch.tensor(data["rotation"][0]), pts[0]) + torch.tensor(data["translation"][0])
    uv = project(cam[None], torch.tensor(data["K"]))[0].numpy()
    assert np.mean(np.linalg.norm(uv - lms[0, b.mediapipe_index.numpy(), :2], axis=1)) < 1.0


def test_prepare_face_model_resumes(prepared, tmp_path):
    import shutil

    from talksplat.prepare import PrepareConfig, prepare
    from talksplat.prepare.face_model import FACE_MODEL

    synth, result = prepared
    root = tmp_path / "copy"
    shutil.copytree(result.subject_dir, root)
    path = root / FACE_MODEL
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    again = prepare(synth.video, root, PrepareConfig(size=128), quiet=True)
    assert "face_model" in again.ran and "cameras" in again.skipped
    assert np.load(path)["expression"].shape == (result.n_frames, 53)
