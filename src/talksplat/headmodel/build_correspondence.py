"""Make the bundled assets of the head model (run once by a developer, never at run time).

    python -m talksplat.headmodel.build_correspondence [--trim-from ../shared/models/ict-facekit]

``--trim-from`` first rewrites ``assets/ict_face_model.npz`` from the converted ICT-FaceKit model
(all vertices, faces, uv and the 53 expressions; the first ``IDENTITY_MODES_KEPT`` identity modes).
Then the MediaPipe correspondence is made by fitting the model to MediaPipe's canonical face
(bundled in ``talksplat/assets/geometry``, an average face in metric units, 468 vertices):

1. a similarity from the canonical face onto the model through 51 Multi-PIE landmarks (the model
   lists their vertices; ``MULTIPIE_TO_MEDIAPIPE`` names the MediaPipe point of each);
2. ``FIT_ROUNDS`` rounds of: closest points of the 468 canonical vertices on the model's face
   triangles, then ridge least squares for the identity weights and a new similarity;
3. each vertex's closest point on the fitted model, kept as (triangle, barycentric coordinates).
   Lip and eyelid points may only land on the matching lip or lid: a closed mouth puts the upper
   and lower inner lip within a millimetre of each other, so nearest-point alone mixes them up.
   "Lower lip" triangles are those that ``jawOpen`` moves, "upper lid" those that ``eyeBlink`` moves.
4. the 10 iris landmarks: the front of each eyeball (pupil) and points ``IRIS_RADIUS_MM`` from it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from talksplat.core.landmarks import (
    LEFT_LOWER_LID,
    LEFT_UPPER_LID,
    LOWER_INNER_LIP,
    LOWER_OUTER_LIP,
    RIGHT_LOWER_LID,
    RIGHT_UPPER_LID,
    UPPER_INNER_LIP,
    UPPER_OUTER_LIP,
)
from talksplat.headmodel.correspondence import (
    CORRESPONDENCE_FILE,
    EYEBALL_REGION,
    IRIS_LANDMARKS,
    IRIS_RING_DIRECTIONS,
    NUM_MEDIAPIPE,
)
from talksplat.headmodel.model import MODEL_FILE, HeadModel, load_head_model

IDENTITY_MODES_KEPT = 30          # 95.5% of the face region's identity variance; keeps the wheel small
FIT_ROUNDS = 8
IDENTITY_RIDGE = 1.0              # prior weight of identity weights (mm^2 per unit^2)
CANDIDATE_TRIANGLES = 64          # nearest triangles (by centroid) searched for each point
# Triangles moving more than this under jawOpen = 1 are lower lip / jaw, the rest upper lip (a
# partition: a stricter upper-lip threshold pushed the points near the corners 5-9 mm off).
LIP_SPLIT_MM = 10.0
UPPER_LID_MM = 4.0                # moving more than this under eyeBlink = 1: upper eyelid
LOWER_LID_MM = 2.5                # ... less than this: lower lid
IRIS_RADIUS_MM = 5.9              # half the average human iris diameter (11.8 mm)

# Multi-PIE 68-point index -> MediaPipe landmark (brows, nose, eyes, outer and inner lips: 17-67).
MULTIPIE_TO_MEDIAPIPE = dict(zip(range(17, 68), (
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    78, 82, 13, 312, 308, 317, 14, 87)))

# Landmarks restricted to one side of the mouth or one eyelid (MediaPipe numbering).
UPPER_LIP = UPPER_INNER_LIP + UPPER_OUTER_LIP
LOWER_LIP = LOWER_INNER_LIP + LOWER_OUTER_LIP
UPPER_LIDS = {"R": RIGHT_UPPER_LID, "L": LEFT_UPPER_LID}
LOWER_LIDS = {"R": RIGHT_LOWER_LID, "L": LEFT_LOWER_LID}


def trim_model(source_dir: Path, out: Path = MODEL_FILE) -> None:
    """Write the bundled model from the converted ICT-FaceKit npz (fewer identity modes)."""
    with np.load(Path(source_dir) / "ict_face_model.npz") as d:
        arrays = {k: d[k] for k in d.files}
    arrays["identity_deltas"] = arrays["identity_deltas"][:IDENTITY_MODES_KEPT]
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)


# ---------------------------------------------------------------------------------------------
def closest_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closest points (..., 3) of p on triangles (a, b, c) and their barycentric coordinates (..., 3)."""
    ab, ac, ap = b - a, c - a, p - a
    n = np.cross(ab, ac)
    nn = np.maximum((n * n).sum(-1, keepdims=True), 1e-12)
    q = p - ((ap * n).sum(-1, keepdims=True) / nn) * n          # projection onto the plane
    v = (np.cross(q - a, ac) * n).sum(-1) / nn[..., 0]
    w = (np.cross(ab, q - a) * n).sum(-1) / nn[..., 0]
    bary = np.stack([1 - v - w, v, w], -1)
    inside = (bary >= 0).all(-1)
    best_d = np.where(inside, ((q - p) ** 2).sum(-1), np.inf)
    best_q, best_bary = q, bary
    # Outside: the nearest point of the three edges.
    for (s, e, i, j) in ((a, b, 0, 1), (b, c, 1, 2), (c, a, 2, 0)):
        se = e - s
        t = np.clip(((p - s) * se).sum(-1) / np.maximum((se * se).sum(-1), 1e-12), 0, 1)
        qe = s + t[..., None] * se
        d = ((qe - p) ** 2).sum(-1)
        be = np.zeros_like(bary)
        np.put_along_axis(be, np.full(t.shape + (1,), i), (1 - t)[..., None], -1)
        np.put_along_axis(be, np.full(t.shape + (1,), j), t[..., None], -1)
        better = ~inside & (d < best_d)
        best_d = np.where(better, d, best_d)
        best_q = np.where(better[..., None], qe, best_q)
        best_bary = np.where(better[..., None], be, best_bary)
    return best_q, best_bary


def nearest_on_mesh(points: np.ndarray, verts: np.ndarray, tris: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each point (N, 3): index into ``tris`` of the closest triangle and barycentric coordinates."""
    k = min(CANDIDATE_TRIANGLES, len(tris))
    _, cand = cKDTree(verts[tris].mean(1)).query(points, k=k)
    cand = cand.reshape(len(points), k)
    tv = verts[tris[cand]]                               # (N, k, 3 corners, 3)
    q, bary = closest_on_triangles(points[:, None], tv[:, :, 0], tv[:, :, 1], tv[:, :, 2])
    best = np.argmin(((q - points[:, None]) ** 2).sum(-1), axis=1)
    rows = np.arange(len(points))
    return cand[rows, best], bary[rows, best]


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (s, R, t) with dst ~ s R src + t (no reflection)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sv, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ d @ vt
    s = float(np.trace(np.diag(sv) @ d) / (a ** 2).sum(1).mean())
    return s, rot, mu_d - s * rot @ mu_s


def triangle_groups(model: HeadModel) -> dict[str, np.ndarray]:
    """Triangle index sets (into model.triangles) that each landmark group may land on."""
    tris = model.triangles
    face_stop = model.regions["face"][1]
    face = (tris < face_stop).all(1)

    def motion(name: str) -> np.ndarray:
        m = np.linalg.norm(model.expression_basis[model.expression_index(name)], axis=1)
        return m[tris].mean(1)

    jaw = motion("jawOpen")
    groups = {"face": np.flatnonzero(face), "upper_lip": np.flatnonzero(face & (jaw <= LIP_SPLIT_MM)),
              "lower_lip": np.flatnonzero(face & (jaw > LIP_SPLIT_MM))}
    for side in ("L", "R"):
        blink = motion(f"eyeBlink_{side}")
        groups[f"upper_lid_{side}"] = np.flatnonzero(face & (blink > UPPER_LID_MM))
        groups[f"lower_lid_{side}"] = np.flatnonzero(face & (blink < LOWER_LID_MM))
    return groups


def landmark_groups() -> dict[int, str]:
    """MediaPipe index -> the triangle group it is restricted to (others: "face")."""
    out = {i: "upper_lip" for i in UPPER_LIP} | {i: "lower_lip" for i in LOWER_LIP}
    for side in ("L", "R"):
        out |= {i: f"upper_lid_{side}" for i in UPPER_LIDS[side]}
        out |= {i: f"lower_lid_{side}" for i in LOWER_LIDS[side]}
    return out


def _closest_by_group(points: np.ndarray, verts: np.ndarray, model: HeadModel,
                      groups: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(triangle vertex ids (N, 3), barycentric (N, 3)) of each point's closest allowed point."""
    assign = landmark_groups()
    names = np.array([assign.get(i, "face") for i in range(len(points))])
    tri_ids = np.zeros((len(points), 3), np.int64)
    bary = np.zeros((len(points), 3))
    for g in np.unique(names):
        rows = np.flatnonzero(names == g)
        tris = model.triangles[groups[g]]
        idx, b = nearest_on_mesh(points[rows], verts, tris)
        tri_ids[rows], bary[rows] = tris[idx], b
    return tri_ids, bary


def _identity_solve(model: HeadModel, tri_ids: np.ndarray, bary: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Ridge least squares for identity weights that bring the landmark points onto targets."""
    def pts(arr: np.ndarray) -> np.ndarray:
        return np.einsum("...nkc,nk->...nc", arr[..., tri_ids, :], bary)

    basis = pts(model.identity_basis).reshape(model.num_identity, -1).T.astype(np.float64)
    rhs = (targets - pts(model.neutral)).reshape(-1)
    lhs = basis.T @ basis + IDENTITY_RIDGE * np.eye(model.num_identity)
    return np.linalg.solve(lhs, basis.T @ rhs)


def fit_canonical(model: HeadModel, canonical: np.ndarray) -> dict:
    """Fit identity + similarity to the canonical face; return the correspondence and figures."""
    mp = np.array(list(MULTIPIE_TO_MEDIAPIPE.values()))
    mpie = model.multipie68[list(MULTIPIE_TO_MEDIAPIPE.keys())]
    s, rot, t = umeyama(canonical[mp], model.neutral[mpie].astype(np.float64))
    groups = triangle_groups(model)
    identity = np.zeros(model.num_identity)
    for _ in range(FIT_ROUNDS):
        verts = model.vertices(identity)
        target = s * canonical @ rot.T + t
        tri_ids, bary = _closest_by_group(target, verts, model, groups)
        identity = _identity_solve(model, tri_ids, bary, target)
        on_model = np.einsum("nkc,nk->nc", model.vertices(identity)[tri_ids], bary)
        s, rot, t = umeyama(canonical, on_model)
    verts = model.vertices(identity)
    target = s * canonical @ rot.T + t
    tri_ids, bary = _closest_by_group(target, verts, model, groups)
    dist = np.linalg.norm(np.einsum("nkc,nk->nc", verts[tri_ids], bary) - target, axis=1)
    return {"triangle": tri_ids, "barycentric": bary, "identity": identity, "scale": s, "rotation": rot,
            "translation": t, "distance_mm": dist}


def iris_points(model: HeadModel, verts: np.ndarray) -> dict[int, int]:
    """MediaPipe iris index -> eyeball vertex (pupil = the front-most point, ring around it)."""
    out = {}
    for side, idx in IRIS_LANDMARKS.items():
        ball = model.region(EYEBALL_REGION[side])
        pupil = ball[np.argmin(verts[ball, 2])]          # z points into the head: front = smallest z
        out[idx[0]] = int(pupil)
        for mp_i, (dx, dy) in zip(idx[1:], IRIS_RING_DIRECTIONS):
            goal = verts[pupil] + IRIS_RADIUS_MM * np.array([dx, dy, 0.0])
            out[mp_i] = int(ball[np.argmin(np.linalg.norm(verts[ball] - goal, axis=1))])
    return out


def build(out: Path = CORRESPONDENCE_FILE) -> dict:
    from talksplat.tracking.template import load_canonical_template

    model = load_head_model()
    canonical = load_canonical_template().vertices
    fit = fit_canonical(model, canonical)
    n_surface = canonical.shape[0]
    tri = np.zeros((NUM_MEDIAPIPE, 3), np.int64)
    bary = np.zeros((NUM_MEDIAPIPE, 3))
    tri[:n_surface], bary[:n_surface] = fit["triangle"], fit["barycentric"]
    for mp_i, v in iris_points(model, model.vertices(fit["identity"])).items():
        tri[mp_i], bary[mp_i] = v, (1.0, 0.0, 0.0)
    dist = fit["distance_mm"]
    np.savez_compressed(
        out, mediapipe_index=np.arange(NUM_MEDIAPIPE), triangle=tri.astype(np.int32),
        barycentric=bary.astype(np.float32),
        info_canonical_identity=fit["identity"].astype(np.float32),
        info_canonical_scale=np.float64(fit["scale"]), info_canonical_rotation=fit["rotation"],
        info_canonical_translation=fit["translation"],
        info_distance_mm=dist.astype(np.float32),
        info_method=np.array("fit of the ICT model (identity + similarity) to MediaPipe's canonical face; "
                             "closest points on lip/eyelid-restricted triangles; irises on the eyeballs"))
    return {"rms_mm": float(np.sqrt(np.mean(dist ** 2))), "max_mm": float(dist.max()),
            "scale": fit["scale"], "identity_norm": float(np.linalg.norm(fit["identity"]))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trim-from", type=Path, help="folder of the converted ICT-FaceKit npz")
    args = parser.parse_args(argv)
    if args.trim_from:
        trim_model(args.trim_from)
        load_head_model.cache_clear()
    figures = build()
    print(f"wrote {CORRESPONDENCE_FILE}: canonical face to model rms {figures['rms_mm']:.2f} mm "
          f"(max {figures['max_mm']:.2f}), scale {figures['scale']:.3f}, identity |a| {figures['identity_norm']:.2f}")


if __name__ == "__main__":
    main()
