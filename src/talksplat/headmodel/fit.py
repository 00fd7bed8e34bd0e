"""Fit the head model to tracked MediaPipe landmarks: one identity per subject, per frame 53
expression weights in [0, 1] and a rigid pose, in torch on the CPU, batched over frames.

Cost (residuals in percent of the inter-ocular distance, so the priors do not depend on the image
size): robust (Huber) landmark reprojection error under the dataset's pinhole camera, plus
- an identity prior (ridge: the modes are PCA directions of roughly unit variance),
- an expression ridge (without it blendshapes trade off: mouthFrown/Stretch absorb jawOpen),
- temporal smoothness of the expressions and of the pose corrections,
- a ridge on per-subject landmark offsets (N x 3 mm, fitted with the identity): where MediaPipe puts
  a landmark on this face differs from the canonical correspondence (iris height, lid and lip
  contours), and without the offsets that difference became a constant expression (eyeWide at 1,
  eyeLookUp at 0.45 on every frame of the synthetic subject, blinks capped at 0.3);
- a pull of each frame's pose to the camera of ``prepare`` (the fit refines the stabilised cameras,
  it does not replace them): a per-subject constant offset between the camera template's head frame
  and the model's frame is free, per-frame deviations from it are penalised.

Two stages (warm-started): (1) identity, the constant offset, poses and expressions on a subset of
frames spread over the clip; (2) every frame with the identity fixed, poses starting from the
nearest subset frame's. The landmarks are linear in the identity, the offsets and the expressions:
those are solved for by Gauss-Newton (bounded to [0, 1] for the expressions) between the projected
Adam steps that fit the poses and the couplings (see ``_gauss_newton_expressions``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from talksplat.core.landmarks import (
    FACE_OVAL,
    LEFT_EYE,
    LEFT_EYE_OUTER,
    LIP_POINTS,
    RIGHT_EYE,
    RIGHT_EYE_OUTER,
)
from talksplat.headmodel.correspondence import IRIS_LANDMARKS, LandmarkBasis

PERCENT = 100.0
MIN_DEPTH_MM = 50.0
# Landmark weights: the face oval is a silhouette (it slides over the surface as the head turns, so
# it has no fixed model point); iris rings are small and noisy.
OVAL_WEIGHT = 0.2
IRIS_WEIGHT = 0.5
# Lips and eyelids carry the expressions that matter most downstream (speech, blinks): they count more.
EXPRESSIVE_WEIGHT = 3.0
# Per-blendshape multipliers of the expression ridge. Several ARKit shapes can open the lips (jawOpen,
# mouthLowerDown, mouthClose released, mouthRoll/Shrug/Funnel); with one ridge for all, the fit spread
# speech over them (synthetic subject: jawOpen vs the true opening r 0.49). Speech opens the mouth
# mostly with the jaw, and blinks close the lids: those two are cheap, the lip-detail shapes dear.
PRIMARY_SHAPES = ("jawOpen", "eyeBlink_L", "eyeBlink_R")
PRIMARY_RIDGE = 0.25
DETAIL_SHAPES = ("mouthClose", "mouthLowerDown_L", "mouthLowerDown_R", "mouthUpperUp_L", "mouthUpperUp_R",
                 "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthFunnel",
                 "mouthPress_L", "mouthPress_R", "mouthStretch_L", "mouthStretch_R")
DETAIL_RIDGE = 4.0
# mouthClose exists to cancel jawOpen's lip parting (ARKit: lips together with the jaw open); fitted
# freely, jawOpen + mouthClose pairs absorbed the jaw (Obama clip: jawOpen vs lip gap r 0.43).
COMPENSATOR_SHAPES = ("mouthClose",)
COMPENSATOR_RIDGE = 100.0


@dataclass(frozen=True)
class FitConfig:
    """Weights and schedule of the fit (residual unit: % of the inter-ocular distance)."""

    huber: float = 3.0                 # residuals beyond this (% IOD, ~2 px at 512^2) count linearly
    identity_prior: float = 0.5        # per unit^2 of identity weight
    expression_ridge: float = 300.0    # per unit^2 of expression weight (jawOpen at 1 costs ~1e5 in the data term)
    expression_smooth: float = 1.0     # per unit^2 of frame-to-frame expression change
    pose_prior_deg: float = 0.5        # per deg^2 of rotation deviation from the camera's
    pose_prior_mm: float = 0.05        # per mm^2 of translation deviation
    pose_smooth: float = 2.0           # per deg^2 (and mm^2) of frame-to-frame deviation change
    subset_frames: int = 48            # frames of stage 1 (identity)
    subset_iterations: int = 100      # Adam steps of stage 1 (Gauss-Newton solves in between)
    iterations: int = 50               # Adam steps of stage 2 after its solve (pose deviations, smoothing)
    lr_expression: float = 0.03
    lr_identity: float = 0.05
    lr_offset: float = 0.05            # mm per step
    lr_rotation: float = 0.002         # radians per step
    lr_translation: float = 0.3        # mm per step
    fit_identity: bool = True
    offset_prior: float = 0.002          # per mm^2 of landmark offset (0 = no offsets)
    gauss_newton_rounds: int = 2       # linearised bounded least-squares solves of the expressions per solve (0 = Adam only)
    subset_solve_every: int = 50       # stage 1: solve identity, offsets and expressions every this many Adam steps

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class FaceFit:
    """Fitted parameters of T frames."""

    identity: np.ndarray           # (K,)
    expression: np.ndarray         # (T, 53) in [0, 1]
    rotation: np.ndarray           # (T, 3, 3) model (head frame) -> camera
    translation: np.ndarray        # (T, 3) mm
    landmark_error_px: np.ndarray  # (T,) mean distance over the 478 landmarks
    offset_rotation: np.ndarray    # (3, 3) constant model -> camera-template head frame part
    offset_translation: np.ndarray  # (3,)
    deviation_deg: np.ndarray      # (T,) rotation deviation from the camera (after the offset)
    landmark_offsets: np.ndarray   # (N, 3) mm, per-subject landmark placement (head frame)


def so3_exp(w: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) from axis-angle vectors (..., 3) (Rodrigues, safe at 0)."""
    theta2 = (w * w).sum(-1, keepdim=True)[..., None]
    theta = torch.sqrt(theta2 + 1e-20)
    zero = torch.zeros_like(w[..., 0])
    k = torch.stack([torch.stack([zero, -w[..., 2], w[..., 1]], -1),
                     torch.stack([w[..., 2], zero, -w[..., 0]], -1),
                     torch.stack([-w[..., 1], w[..., 0], zero], -1)], -2)
    small = theta2 < 1e-8
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / (theta2 + 1e-20))
    eye = torch.eye(3, dtype=w.dtype).expand(k.shape)
    return eye + a * k + b * (k @ k)


def project(points: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Camera points (T, N, 3) -> pixels (T, N, 2)."""
    z = points[..., 2:3].clamp(min=MIN_DEPTH_MM)
    return points[..., :2] / z * torch.stack([K[0, 0], K[1, 1]]) + torch.stack([K[0, 2], K[1, 2]])


def landmark_weights(basis: LandmarkBasis) -> torch.Tensor:
    """(N,) weight of each correspondence point in the data term."""
    idx = basis.mediapipe_index.numpy()
    w = np.ones(idx.size)
    w[np.isin(idx, FACE_OVAL)] = OVAL_WEIGHT
    w[np.isin(idx, LIP_POINTS + RIGHT_EYE + LEFT_EYE)] = EXPRESSIVE_WEIGHT
    w[np.isin(idx, IRIS_LANDMARKS["L"] + IRIS_LANDMARKS["R"])] = IRIS_WEIGHT
    return torch.tensor(w, dtype=torch.float32)


def ridge_multipliers(names: tuple[str, ...]) -> torch.Tensor:
    """(53,) expression-ridge multiplier of each blendshape (see PRIMARY_SHAPES)."""
    out = torch.ones(len(names))
    for name in PRIMARY_SHAPES:
        out[names.index(name)] = PRIMARY_RIDGE
    for name in DETAIL_SHAPES:
        out[names.index(name)] = DETAIL_RIDGE
    for name in COMPENSATOR_SHAPES:
        out[names.index(name)] = COMPENSATOR_RIDGE
    return out


def _huber(r2: torch.Tensor, delta: float) -> torch.Tensor:
    """Huber of residual norms given their squares (quadratic below delta)."""
    r = torch.sqrt(r2 + 1e-12)
    return torch.where(r <= delta, r2, 2 * delta * r - delta * delta)


class _Problem:
    """Tensors and the cost of one batch of frames."""

    def __init__(self, basis: LandmarkBasis, uv: np.ndarray, K: np.ndarray, R0: np.ndarray, t0: np.ndarray,
                 frame_weight: np.ndarray, cfg: FitConfig) -> None:
        self.basis, self.cfg = basis, cfg
        rows = basis.mediapipe_index
        self.uv = torch.tensor(uv, dtype=torch.float32)[:, rows]
        self.K = torch.tensor(K, dtype=torch.float32)
        self.R0 = torch.tensor(R0, dtype=torch.float32)
        self.t0 = torch.tensor(t0, dtype=torch.float32)
        iod = np.linalg.norm(uv[:, RIGHT_EYE_OUTER, :2] - uv[:, LEFT_EYE_OUTER, :2], axis=1)
        self.scale = torch.tensor(PERCENT / np.maximum(iod, 1.0), dtype=torch.float32)   # px -> % IOD
        self.w = landmark_weights(basis)
        self.ridge = cfg.expression_ridge * ridge_multipliers(basis.expression_names)
        self.frame_weight = torch.tensor(frame_weight, dtype=torch.float32)

    def poses(self, w_const, t_const, w_dev, t_dev, frames: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
        """Model -> camera: X_cam = R0 (exp(w_const + w_dev) X + t_const + t_dev) + t0 (of ``frames``)."""
        R0, t0 = self.R0[frames], self.t0[frames]
        rot = R0 @ so3_exp(w_const[None] + w_dev)
        trans = torch.einsum("tij,tj->ti", R0, t_const[None] + t_dev) + t0
        return rot, trans

    def pixels(self, identity, expression, rot, trans, offsets=None) -> torch.Tensor:
        pts = self.basis.points(identity, expression, offsets)
        return project(torch.einsum("tij,tnj->tni", rot, pts) + trans[:, None], self.K)

    def cost(self, identity, expression, w_const, t_const, w_dev, t_dev, offsets) -> torch.Tensor:
        cfg = self.cfg
        rot, trans = self.poses(w_const, t_const, w_dev, t_dev)
        r2 = ((self.pixels(identity, expression, rot, trans, offsets) - self.uv) ** 2).sum(-1) * self.scale[:, None] ** 2
        data = (_huber(r2, cfg.huber) * self.w).sum(1)
        deg = torch.rad2deg(w_dev)
        per_frame = (data + (self.ridge * expression ** 2).sum(1)
                     + cfg.pose_prior_deg * (deg ** 2).sum(1) + cfg.pose_prior_mm * (t_dev ** 2).sum(1))
        total = (per_frame * self.frame_weight).sum()
        if expression.shape[0] > 1:
            total = total + cfg.expression_smooth * ((expression[1:] - expression[:-1]) ** 2).sum()
            total = total + cfg.pose_smooth * (((deg[1:] - deg[:-1]) ** 2).sum() + ((t_dev[1:] - t_dev[:-1]) ** 2).sum())
        return (total / self.frame_weight.sum().clamp(min=1e-6) + cfg.identity_prior * (identity ** 2).sum()
                + cfg.offset_prior * (offsets ** 2).sum())


GAZE_SHAPE_PREFIX = "eyeLook"
STAGE2_TRAINABLE = ("expression", "w_dev", "t_dev")   # identity and offsets stay as stage 1 left them
GN_CHUNK_FRAMES = 64            # frames per batched solve (bounds the (frames, 83, N, 2) Jacobian's memory)
SOLVE_EPS = 1e-6                # keeps a frame of weight 0 (no smoothing) solvable: its weights stay put
ACTIVE_SET_PASSES = 3           # box-constrained Newton step: free/bound variable updates per round


def _linear_rows(basis: LandmarkBasis) -> torch.Tensor:
    """(N,) mask of the points that move linearly with the weights: all but the irises (turned by gaze)."""
    rows = torch.ones(basis.mean.shape[0], dtype=torch.bool)
    for side_rows in basis.iris_rows.values():
        rows[side_rows] = False
    return rows


@dataclass
class _Linearisation:
    """Residuals of frames ``sl`` at the current parameters, ready for Gauss-Newton solves."""

    A: torch.Tensor          # (t, M, 2, 3) d(scaled u, v residual) / d(head-frame point)
    res: torch.Tensor        # (t, M, 2) u, v residuals, % IOD
    omega: torch.Tensor      # (t, M) landmark weight x Huber reweighting

    def jacobians(self, directions: torch.Tensor, rows: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        """Residual derivatives (t, J, M', 2) for head-frame point motions ``directions`` (J, M', 3)
        or per frame (t, J, M', 3) of the points ``rows``."""
        spec = "tmck,jmk->tjmc" if directions.dim() == 3 else "tmck,tjmk->tjmc"
        return torch.einsum(spec, self.A[:, rows], directions).contiguous()

    def system(self, jac: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame Gauss-Newton system (H (t, J, J), g (t, J)) of sum_m omega |res + jac delta|^2."""
        t, n_dir = jac.shape[:2]
        weighted = (jac * self.omega[:, None, :, None]).reshape(t, n_dir, -1)
        H = torch.bmm(weighted, jac.reshape(t, n_dir, -1).transpose(1, 2))
        g = torch.bmm(weighted, self.res.reshape(t, -1, 1))[..., 0]
        return H, g


def _linearise(problem: _Problem, params: dict[str, torch.Tensor], expression: torch.Tensor, sl: slice) -> _Linearisation:
    cfg, K = problem.cfg, problem.K
    rot, trans = problem.poses(params["w_const"], params["t_const"], params["w_dev"][sl], params["t_dev"][sl], sl)
    pts = problem.basis.points(params["identity"], expression, params["offsets"])
    X = torch.einsum("tij,tmj->tmi", rot, pts) + trans[:, None]
    z = X[..., 2].clamp(min=MIN_DEPTH_MM)
    s = problem.scale[sl, None]
    f = torch.stack([K[0, 0], K[1, 1]])
    res = (X[..., :2] / z[..., None] * f + K[:2, 2] - problem.uv[sl]) * s[..., None]
    # Projection Jacobian (2 x 3 per point) times the rotation: residual change per head-frame mm.
    proj = torch.zeros(X.shape[:2] + (2, 3))
    proj[..., 0, 0] = f[0] / z
    proj[..., 1, 1] = f[1] / z
    proj[..., :, 2] = -X[..., :2] * f / (z * z)[..., None]
    A = (proj * s[..., None, None]) @ rot[:, None]
    norm = torch.sqrt((res ** 2).sum(-1) + 1e-12)
    omega = problem.w * torch.where(norm <= cfg.huber, torch.ones_like(norm), cfg.huber / norm)
    return _Linearisation(A, res, omega)


def _gauss_newton_offsets(problem: _Problem, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """The landmark offsets (N, 3) minimising the cost with everything else fixed: one Gauss-Newton
    step, a 3 x 3 system per landmark (each offset moves its own point only); irises kept."""
    rows = _linear_rows(problem.basis)
    n = rows.shape[0]
    H, g = torch.zeros(n, 3, 3), torch.zeros(n, 3)
    fw = problem.frame_weight / problem.frame_weight.sum().clamp(min=1e-6)
    with torch.no_grad():
        for start in range(0, params["expression"].shape[0], GN_CHUNK_FRAMES):
            sl = slice(start, start + GN_CHUNK_FRAMES)
            lin = _linearise(problem, params, params["expression"][sl], sl)
            w = (fw[sl, None] * lin.omega)[..., None, None]                     # (t, N, 1, 1)
            H += torch.einsum("tnck,tncl->nkl", lin.A * w, lin.A)
            g += torch.einsum("tnck,tnc->nk", lin.A * w, lin.res)
        prior = problem.cfg.offset_prior
        cur = params["offsets"][rows]
        new = params["offsets"].clone()
        new[rows] = cur - torch.linalg.solve(H[rows] + prior * torch.eye(3), g[rows] + prior * cur)
        return new


GAZE_STEP = 1e-2                # finite-difference step of a gaze weight (turns an eye by ~0.3 deg)


def _expression_jacobians(lin: _Linearisation, basis: LandmarkBasis, params: dict[str, torch.Tensor],
                          expression: torch.Tensor) -> torch.Tensor:
    """(t, 53, N, 2) residual derivatives per unit of each weight at the current weights: the
    blendshape moves the points, and the gaze shapes also turn the irises (a finite difference)."""
    jac = lin.jacobians(basis.expression)
    gaze = [j for j, n in enumerate(basis.expression_names) if n.startswith(GAZE_SHAPE_PREFIX)]
    iris = torch.cat(list(basis.iris_rows.values()))
    if not gaze or iris.numel() == 0:
        return jac
    base = basis.points(params["identity"], expression, params["offsets"])[:, iris]
    moved = []
    for j in gaze:
        shifted = expression.clone()
        shifted[:, j] += GAZE_STEP
        moved.append((basis.points(params["identity"], shifted, params["offsets"])[:, iris] - base) / GAZE_STEP)
    patch = lin.jacobians(torch.stack(moved, 1), iris)                 # (t, G, I, 2)
    for k, j in enumerate(gaze):
        jac[:, j, iris] = patch[:, k]
    return jac


def _gauss_newton_expressions(problem: _Problem, params: dict[str, torch.Tensor], rounds: int,
                              with_identity: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The expressions (T, 53), and with ``with_identity`` the identity (K,), minimising the cost
    with everything else fixed: a few Gauss-Newton rounds, each a batched bounded least-squares
    solve in [0, 1] per frame.

    The landmarks are linear in the weights, so each round is one (53 x 53) solve per frame: far
    cheaper than hundreds of gradient steps (the warm start of stage 2, the nearest subset frame, is
    several frames off at speech rate, and Adam needed ~200 steps to walk the mouth from there).
    The identity is shared by all frames: its step eliminates the expressions (Schur complement;
    solving the two in turn crawled, since identity and expression shapes overlap). The gaze shapes
    also turn the irises (a rotation): their effect on the iris points is a finite difference at the
    current weights. Temporal smoothness couples neighbours: each round holds them at their previous
    values (a block-Jacobi step; the term is weak beside the data)."""
    basis = problem.basis
    n_ex = len(basis.expression_names)
    total = problem.frame_weight.sum().clamp(min=1e-6)
    fw = problem.frame_weight / total
    smooth = problem.cfg.expression_smooth / total
    prior = problem.cfg.identity_prior
    ident = params["identity"].clone()
    with torch.no_grad():
        out = params["expression"].clone()
        for _ in range(rounds):
            prev, trial = out.clone(), dict(params, identity=ident)
            pull, count = _neighbour_terms(prev)
            systems = []
            for start in range(0, out.shape[0], GN_CHUNK_FRAMES):
                sl = slice(start, start + GN_CHUNK_FRAMES)
                lin = _linearise(problem, trial, prev[sl], sl)
                jac = _expression_jacobians(lin, basis, trial, prev[sl])
                if with_identity:      # iris points: their eyeball centre's identity motion is close enough
                    jac = torch.cat([jac, lin.jacobians(basis.identity)], 1)
                H, g = lin.system(jac)
                H, g = fw[sl, None, None] * H, fw[sl, None] * g
                # Per frame: fw_t (data + ridge) + smooth * sum over neighbours of |x_t - x_nb|^2.
                ridge = fw[sl, None] * problem.ridge + smooth * count[sl, None] + SOLVE_EPS
                H[:, :n_ex, :n_ex] += torch.diag_embed(ridge)
                g[:, :n_ex] += fw[sl, None] * problem.ridge * prev[sl] + smooth * (count[sl, None] * prev[sl] - pull[sl])
                systems.append((sl, H, g))
            step = _schur_identity_step(systems, n_ex, prev, prior * ident, prior) if with_identity else None
            for sl, H, g in systems:
                g_e = g[:, :n_ex] if step is None else g[:, :n_ex] + H[:, :n_ex, n_ex:] @ step
                out[sl] = _bounded_newton_step(H[:, :n_ex, :n_ex], g_e, prev[sl])
            if step is not None:
                ident = ident + step
    return out, ident


def _schur_identity_step(systems: list, n_ex: int, expression: torch.Tensor, prior_grad: torch.Tensor,
                         prior: float) -> torch.Tensor:
    """Identity step of the joint (expressions, identity) Newton system with the expressions
    eliminated; expressions held at a bound (gradient pushing outwards) count as fixed."""
    k = prior_grad.shape[0]
    S, r = prior * torch.eye(k), prior_grad.clone()
    for sl, H, g in systems:
        x = expression[sl]
        pinned = ((x <= 0) & (g[:, :n_ex] > 0)) | ((x >= 1) & (g[:, :n_ex] < 0))
        keep = (~pinned).to(H.dtype)
        h_ee = H[:, :n_ex, :n_ex] * keep[:, :, None] * keep[:, None, :] + torch.diag_embed(1 - keep)
        h_ei = H[:, :n_ex, n_ex:] * keep[:, :, None]
        sol = torch.linalg.solve(h_ee, torch.cat([h_ei, (g[:, :n_ex] * keep)[..., None]], 2))
        S += H[:, n_ex:, n_ex:].sum(0) - torch.einsum("tej,tek->jk", h_ei, sol[..., :k])
        r += g[:, n_ex:].sum(0) - torch.einsum("tej,te->j", h_ei, sol[..., k])
    return -torch.linalg.solve(S, r)


def _neighbour_terms(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of each frame's neighbours (T, n) and how many it has (T,) (1 at the ends, 0 alone)."""
    pull = torch.zeros_like(x)
    pull[1:] += x[:-1]
    pull[:-1] += x[1:]
    count = torch.full((x.shape[0],), 2.0)
    count[0] -= 1
    count[-1] -= 1
    return pull, count.clamp(min=0)


def _bounded_newton_step(H: torch.Tensor, g: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Minimise q(x) = g.(x - x0) + (x - x0).H(x - x0)/2 over x in [0, 1] (batched (t, n)): a few
    active-set passes (variables at a bound whose gradient pushes them outwards stay there, the
    rest are solved for, then clipped)."""
    x = x0.clone()
    eye = torch.eye(H.shape[-1], dtype=H.dtype).expand_as(H)
    for _ in range(ACTIVE_SET_PASSES):
        grad = g + torch.einsum("tjk,tk->tj", H, x - x0)
        pinned = ((x <= 0) & (grad > 0)) | ((x >= 1) & (grad < 0))
        keep = (~pinned).to(H.dtype)
        mask2 = keep[:, :, None] * keep[:, None, :]
        # Solve for the free variables only, the pinned ones held at x: H_ff d_f = -grad_f.
        step = torch.linalg.solve(H * mask2 + eye * (1 - keep)[:, None, :], -grad * keep)
        x = (x + step).clamp(0.0, 1.0)
    return x


def _solve_linear_parts(problem: _Problem, params: dict[str, torch.Tensor], trainable: list[str]) -> None:
    """Gauss-Newton solves of the parts the landmarks are linear in (those being fitted), in place."""
    with torch.no_grad():
        if "offsets" in trainable:
            params["offsets"].copy_(_gauss_newton_offsets(problem, params))
        expression, identity = _gauss_newton_expressions(problem, params, problem.cfg.gauss_newton_rounds,
                                                         with_identity="identity" in trainable)
        params["expression"].copy_(expression)
        params["identity"].copy_(identity)


def _optimise(problem: _Problem, params: dict[str, torch.Tensor], trainable: list[str], lrs: dict[str, float],
              iterations: int, progress: Callable[[int], None] | None, solve_at: tuple[int, ...] = ()) -> None:
    """Projected Adam on ``trainable``; before the steps in ``solve_at`` (``iterations`` = after the
    last) the identity, offsets and expressions are solved for (Gauss-Newton) with the rest fixed."""
    for name in trainable:
        params[name].requires_grad_(True)
    opt = torch.optim.Adam([{"params": [params[n]], "lr": lrs[n]} for n in trainable])
    order = ("identity", "expression", "w_const", "t_const", "w_dev", "t_dev", "offsets")
    for it in range(iterations + 1):
        if it in solve_at and problem.cfg.gauss_newton_rounds > 0:
            _solve_linear_parts(problem, params, trainable)
            for name in ("identity", "offsets", "expression"):
                opt.state.pop(params[name], None)        # stale moments would undo the solve
        if it == iterations:
            break
        opt.zero_grad(set_to_none=True)
        problem.cost(*(params[n] for n in order)).backward()
        opt.step()
        with torch.no_grad():
            params["expression"].clamp_(0.0, 1.0)
        if progress is not None:
            progress(1)
    for name in trainable:
        params[name].requires_grad_(False)


def subset_indices(n: int, count: int, frame_weight: np.ndarray) -> np.ndarray:
    """Up to ``count`` frames spread evenly over the clip, preferring detected ones."""
    picks = np.unique(np.linspace(0, n - 1, min(count, n)).round().astype(int))
    good = np.flatnonzero(frame_weight >= frame_weight.max())
    if good.size:
        picks = np.unique(good[np.abs(good[None, :] - picks[:, None]).argmin(1)])
    return picks


def fit_sequence(basis: LandmarkBasis, landmarks_px: np.ndarray, K: np.ndarray, R0: np.ndarray, t0: np.ndarray,
                 frame_weight: np.ndarray | None = None, cfg: FitConfig | None = None,
                 identity: np.ndarray | None = None, progress: Callable[[int], None] | None = None) -> FaceFit:
    """Fit T frames of landmarks (T, 478, >=2, pixels) seen by camera K with initial model -> camera poses
    R0 (T, 3, 3), t0 (T, 3). ``identity`` (K,) given = kept fixed. ``progress`` gets iteration counts
    (``total_iterations(cfg)`` in all)."""
    cfg = cfg or FitConfig()
    uv = np.asarray(landmarks_px, np.float64)[..., :2]
    n = uv.shape[0]
    fw = np.ones(n) if frame_weight is None else np.asarray(frame_weight, np.float64)
    n_id, n_ex = basis.identity.shape[0], basis.expression.shape[0]
    ident = torch.zeros(n_id) if identity is None else torch.tensor(identity, dtype=torch.float32)
    const = {"w_const": torch.zeros(3), "t_const": torch.zeros(3)}
    lrs = {"offsets": cfg.lr_offset, "identity": cfg.lr_identity, "expression": cfg.lr_expression, "w_const": cfg.lr_rotation,
           "t_const": cfg.lr_translation, "w_dev": cfg.lr_rotation, "t_dev": cfg.lr_translation}
    # Stage 1: the identity and the constant offset on a subset.
    sub = subset_indices(n, cfg.subset_frames, fw)
    p1 = _Problem(basis, uv[sub], K, R0[sub], t0[sub], fw[sub], cfg)
    s1 = {"identity": ident.clone(), "expression": torch.zeros(sub.size, n_ex), **const,
          "w_dev": torch.zeros(sub.size, 3), "t_dev": torch.zeros(sub.size, 3),
          "offsets": torch.zeros(basis.mean.shape)}
    p1.cfg = cfg if sub.size > 1 and np.all(np.diff(sub) == 1) else _no_smoothing(cfg)   # spread frames: not neighbours
    trainable = ((["identity"] if cfg.fit_identity and identity is None else [])
                 + ["expression", "w_const", "t_const", "w_dev", "t_dev"] + (["offsets"] if cfg.offset_prior > 0 else []))
    _optimise(p1, s1, trainable, lrs, cfg.subset_iterations, progress,
              solve_at=tuple(range(0, cfg.subset_iterations + 1, max(cfg.subset_solve_every, 1))))
    # Stage 2: every frame, identity and offset fixed, expressions warm-started from the nearest subset frame.
    nearest = np.abs(np.arange(n)[:, None] - sub[None, :]).argmin(1)
    p2 = _Problem(basis, uv, K, R0, t0, fw, cfg)
    s2 = {"identity": s1["identity"].detach(), "expression": s1["expression"].detach()[nearest].clone(),
          "w_const": s1["w_const"].detach(), "t_const": s1["t_const"].detach(),
          "w_dev": s1["w_dev"].detach()[nearest].clone(), "t_dev": s1["t_dev"].detach()[nearest].clone(),
          "offsets": s1["offsets"].detach()}
    _optimise(p2, s2, list(STAGE2_TRAINABLE), lrs, cfg.iterations, progress, solve_at=(0, cfg.iterations))
    with torch.no_grad():
        rot, trans = p2.poses(s2["w_const"], s2["t_const"], s2["w_dev"], s2["t_dev"])
        err = (p2.pixels(s2["identity"], s2["expression"], rot, trans, s2["offsets"]) - p2.uv).norm(dim=-1).mean(1)
        dev = torch.rad2deg(s2["w_dev"].norm(dim=1))
    return FaceFit(identity=s2["identity"].numpy().astype(np.float32),
                   expression=s2["expression"].numpy().astype(np.float32),
                   rotation=rot.double().numpy(), translation=trans.double().numpy(),
                   landmark_error_px=err.numpy().astype(np.float32),
                   offset_rotation=so3_exp(s2["w_const"]).double().numpy(),
                   offset_translation=s2["t_const"].double().numpy(), deviation_deg=dev.numpy().astype(np.float32),
                   landmark_offsets=s2["offsets"].numpy().astype(np.float32))


def _no_smoothing(cfg: FitConfig) -> FitConfig:
    from dataclasses import replace

    return replace(cfg, expression_smooth=0.0, pose_smooth=0.0)


def total_iterations(cfg: FitConfig) -> int:
    return cfg.subset_iterations + cfg.iterations


def poses_from_cameras(w2c: np.ndarray, canonical_scale: float, canonical_rotation: np.ndarray,
                       canonical_translation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Model -> camera poses (T, 3, 3), (T, 3) from cameras whose world is the canonical template's
    head frame, given the similarity ``model ~ s Rc canonical + tc`` found when the correspondence
    was built. Perspective images do not change when the whole scene is scaled, so the similarity's
    scale goes into the translation and the pose stays rigid: s X_cam = Rw Rc^T (X - tc) + s tw."""
    rw, tw = w2c[:, :3, :3], w2c[:, :3, 3]
    rot = rw @ canonical_rotation.T
    return rot, canonical_scale * tw - rot @ canonical_translation
