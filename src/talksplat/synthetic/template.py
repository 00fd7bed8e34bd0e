"""The synthetic subject's head: a textured triangle mesh lifted from one public-domain photo.

The photo is scikit-image's ``astronaut`` (Eileen Collins, NASA, public domain). The bundled asset
``assets/face/astronaut_head.png`` is an RGBA crop of it whose alpha is MediaPipe's person matte;
``assets/face/astronaut_facemesh.npz`` holds the 478 FaceMesh landmarks of that crop (pixels; z in
x's pixel scale) and the 852 triangles of MediaPipe's face tessellation (eyes and mouth are holes).
Both were made once by :func:`build_face_asset` (``python -m talksplat.synthetic.template``); at
run time nothing is detected, so the generator is fast, offline and identical on every machine.

:func:`build_head_mesh` turns the asset into a :class:`HeadMesh` in photo pixel coordinates:
face landmarks, a hair/neck outline from the matte, interior fill points, eye-opening triangles,
and "teeth" triangles (the photo's mouth opening, rigid with the skull, drawn behind the lips).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial import Delaunay

from talksplat.core.labels import FACE_LABELS, LABEL_VALUES  # noqa: F401  (FACE_LABELS: used as T.FACE_LABELS)
from talksplat.core.landmarks import FACE_OVAL as _FACE_OVAL_CLOCKWISE
from talksplat.core.landmarks import (  # noqa: F401  (the sets used by rig/render as T.<name>)
    INNER_LIPS,
    JAW,
    LEFT_BROW,
    LEFT_EYE,
    LEFT_IRIS_CENTER,
    LEFT_LOWER_LID,
    LEFT_UPPER_LID,
    LOWER_INNER_LIP,
    LOWER_LIP_CENTER,
    NUM_MESH_VERTICES,
    OUTER_LIPS,
    RIGHT_BROW,
    RIGHT_EYE,
    RIGHT_IRIS_CENTER,
    RIGHT_LOWER_LID,
    RIGHT_UPPER_LID,
    UPPER_INNER_LIP,
    UPPER_LIP_CENTER,
)

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "face"
PHOTO_FILE = ASSET_DIR / "astronaut_head.png"
MESH_FILE = ASSET_DIR / "astronaut_facemesh.npz"

# Crop of the 512x512 astronaut photo stored in the asset: x0, y0, x1, y1 (photo pixels).
ASSET_CROP = (60, 0, 390, 300)

# Landmark index sets and label numbers are talksplat.core's (the same as prepare's).
# The face oval goes the other way round here: the mesh was built (Delaunay, back layer) in this order.
FACE_OVAL = _FACE_OVAL_CLOCKWISE[:1] + _FACE_OVAL_CLOCKWISE[:0:-1]

# Layers, drawn in this order (painter's algorithm); faces within LAYER_FACE are depth-sorted.
LAYER_BACK, LAYER_TEETH, LAYER_FACE = 0, 1, 2


@dataclass(frozen=True)
class FaceAsset:
    """The bundled photo crop, its matte and its landmarks (all in crop pixel coordinates)."""

    rgba: np.ndarray          # (H, W, 4) uint8: RGB photo crop, alpha = person matte
    landmarks: np.ndarray     # (478, 3) float32: x, y pixels; z in x's pixel scale
    face_triangles: np.ndarray  # (852, 3) int32 indices into the landmarks


@dataclass(frozen=True)
class HeadMesh:
    """A triangle mesh over the photo crop. Vertex rows: [0, 468) face landmarks, then
    outline/fill points, then teeth copies of the inner-lip landmarks."""

    uv: np.ndarray            # (N, 2) float32 texture coordinates = photo crop pixels
    z_px: np.ndarray          # (N,) float32 depth offset in photo pixels (MediaPipe z scale)
    attach: np.ndarray        # (N,) float32 1 = moves with the head, 0 = fixed to the torso
    deformable: np.ndarray    # (N,) bool: takes part in mouth/eye/brow deformations
    triangles: np.ndarray     # (M, 3) int32
    layer: np.ndarray         # (M,) int8 LAYER_*
    label: np.ndarray         # (M,) int8 label (talksplat.core.labels) of the pixels it covers
    teeth_index: np.ndarray   # (20,) int32 vertex rows of the teeth copies of INNER_LIPS
    head_region: np.ndarray   # (H, W) bool photo pixels owned by the mesh (not the torso plate)
    static_curve: np.ndarray  # (K, 2) float32 polyline where the neck joins the torso (attach 0)


def photo_sha256() -> str:
    """SHA-256 of scikit-image's astronaut.png as the asset was built from (for the NOTICE)."""
    return "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5"


@lru_cache(maxsize=1)
def load_face_asset() -> FaceAsset:
    """Load the bundled photo crop + matte and landmarks (no detection, no network)."""
    bgra = cv2.imread(str(PHOTO_FILE), cv2.IMREAD_UNCHANGED)
    if bgra is None or bgra.ndim != 3 or bgra.shape[2] != 4:
        raise FileNotFoundError(f"bundled face photo missing or unreadable: {PHOTO_FILE}")
    rgba = cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGBA)
    with np.load(MESH_FILE) as data:
        landmarks = data["landmarks"].astype(np.float32)
        tris = data["face_triangles"].astype(np.int32)
    rgba.setflags(write=False)
    landmarks.setflags(write=False)
    tris.setflags(write=False)
    return FaceAsset(rgba, landmarks, tris)


def _tessellation_triangles() -> np.ndarray:
    """MediaPipe's face tessellation edges turned into its 852 triangles (holes at eyes/mouth)."""
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    edges = {tuple(sorted(e)) for e in FACEMESH_TESSELATION}
    adj: dict[int, set[int]] = {}
    for a, b in edges:
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)
    tris = {tuple(sorted((a, b, c))) for a, b in edges for c in adj[a] & adj[b]}
    count: dict[tuple[int, int], int] = {}
    for t in tris:
        for e in ((t[0], t[1]), (t[0], t[2]), (t[1], t[2])):
            count[e] = count.get(e, 0) + 1
    # 3-cliques whose three edges are all shared by three cliques are not faces of the mesh.
    faces = [t for t in tris if not all(count[e] == 3 for e in ((t[0], t[1]), (t[0], t[2]), (t[1], t[2])))]
    return np.array(sorted(faces), dtype=np.int32)


def _refine_matte(photo: np.ndarray, matte: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Tighten the segmentation matte near its edge where pixels match the local backdrop colour,
    and align it with the photo's edges (guided filter).

    photo (H, W, 3) uint8, matte (H, W) float in [0, 1] -> refined (H, W) float32. The face oval
    is kept opaque (bright skin must not be mistaken for the light backdrop)."""
    rgb = photo.astype(np.float32)
    bg = (matte < 0.05).astype(np.float32)
    num = cv2.GaussianBlur(rgb * bg[..., None], (0, 0), 12)
    den = cv2.GaussianBlur(bg, (0, 0), 12)
    local_bg = num / np.maximum(den, 1e-4)[..., None]
    dist = np.linalg.norm(rgb - local_bg, axis=2)
    t = np.clip((dist - 14.0) / 26.0, 0.0, 1.0)
    fg = t * t * (3 - 2 * t)
    inside = cv2.distanceTransform((matte > 0.5).astype(np.uint8), cv2.DIST_L2, 5)
    near = (inside < 30) & (den > 0.02)
    out = np.where(near, matte * fg, matte).astype(np.float32)
    out = cv2.morphologyEx(out, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    out = cv2.GaussianBlur(out, (0, 0), 0.7)
    # Snap the soft segmentation edge to the photo's edges, then steepen it (no dark halos).
    out = np.clip(cv2.ximgproc.guidedFilter(photo, out, 4, (0.02 * 255) ** 2), 0.0, 1.0)
    t = np.clip((out - 0.2) / 0.6, 0.0, 1.0)
    out = (t * t * (3 - 2 * t)).astype(np.float32)
    oval = np.zeros(matte.shape, np.uint8)
    cv2.fillPoly(oval, [np.round(landmarks[list(FACE_OVAL), :2]).astype(np.int32)], 1)
    return np.maximum(out, oval.astype(np.float32))


def build_face_asset(out_dir: Path = ASSET_DIR) -> tuple[Path, Path]:
    """Rebuild the bundled asset from scikit-image's astronaut photo (needs mediapipe; offline)."""
    from skimage import data as skdata

    from talksplat.tracking.facemesh import FaceMeshTracker

    photo = skdata.astronaut()
    with FaceMeshTracker(static_image_mode=True) as tracker:
        lms = tracker.process(photo)
    if lms is None:
        raise RuntimeError("FaceMesh found no face in the astronaut photo")
    import mediapipe as mp

    with mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0) as seg:
        matte = seg.process(photo).segmentation_mask.astype(np.float32)
    matte = _refine_matte(photo, matte, lms)
    x0, y0, x1, y1 = ASSET_CROP
    rgba = np.dstack([photo, np.round(np.clip(matte, 0, 1) * 255).astype(np.uint8)])[y0:y1, x0:x1]
    lms = lms.copy()
    lms[:, 0] -= x0
    lms[:, 1] -= y0
    out_dir.mkdir(parents=True, exist_ok=True)
    photo_path, mesh_path = out_dir / PHOTO_FILE.name, out_dir / MESH_FILE.name
    cv2.imwrite(str(photo_path), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    np.savez_compressed(mesh_path, landmarks=np.round(lms, 3).astype(np.float32),
                        face_triangles=_tessellation_triangles().astype(np.int16))
    return photo_path, mesh_path


# ----------------------------------------------------------------------------------------------
# Mesh construction

def _inside(poly: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """(P,) bool: which of pts (P, 2) lie inside polygon poly (K, 2)."""
    contour = poly.reshape(-1, 1, 2).astype(np.float32)
    return np.array([cv2.pointPolygonTest(contour, (float(x), float(y)), False) > 0 for x, y in pts])


def _resample_closed(curve: np.ndarray, step: float) -> np.ndarray:
    """Points every ``step`` pixels along a closed polyline (K, 2)."""
    pts = np.vstack([curve, curve[:1]]).astype(np.float64)
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(int(s[-1] // step), 8)
    t = np.linspace(0.0, s[-1], n, endpoint=False)
    return np.stack([np.interp(t, s, pts[:, 0]), np.interp(t, s, pts[:, 1])], axis=1)


def _dist_to_polyline(pts: np.ndarray, line: np.ndarray) -> np.ndarray:
    """(P,) distance of points (P, 2) to an open polyline (K, 2)."""
    a, b = line[:-1][None], line[1:][None]
    p = pts[:, None]
    ab = b - a
    t = np.clip(((p - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-9), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[..., None] * ab), axis=-1).min(axis=1)


def _delaunay_inside(points: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Delaunay triangles of ``points`` whose centroid lies inside ``poly``; (M, 3) int32."""
    tri = Delaunay(points.astype(np.float64)).simplices
    keep = _inside(poly, points[tri].mean(axis=1))
    return tri[keep].astype(np.int32)


@lru_cache(maxsize=1)
def build_head_mesh() -> HeadMesh:
    """Build the head/neck mesh over the bundled photo crop (deterministic, ~50 ms)."""
    asset = load_face_asset()
    lm = asset.landmarks
    h, w = asset.rgba.shape[:2]
    matte = asset.rgba[..., 3].astype(np.float32) / 255.0
    xy = lm[:NUM_MESH_VERTICES, :2].astype(np.float64)
    face_w = float(np.linalg.norm(xy[454] - xy[234]))

    # The torso owns everything below a curve a little under the jaw; the mesh owns the rest of
    # the person (hair, ears, the neck strip between jaw and curve).
    drop = 0.13 * face_w
    jaw = xy[list(JAW)] + np.array([0.0, drop])
    side = 1.3 * face_w
    static_curve = np.vstack([[jaw[0, 0] - side, jaw[0, 1]], jaw, [jaw[-1, 0] + side, jaw[-1, 1]]])
    corridor = np.vstack([static_curve, [[static_curve[-1, 0], -h], [static_curve[0, 0], -h]]])
    region = np.zeros((h, w), np.uint8)
    cv2.fillPoly(region, [np.round(corridor * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
    region &= (matte > 0.06).astype(np.uint8)
    region = cv2.morphologyEx(region, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    outline = max(contours, key=cv2.contourArea)[:, 0, :].astype(np.float64)
    outline = cv2.approxPolyDP(outline.astype(np.float32).reshape(-1, 1, 2), 0.6, True)[:, 0].astype(np.float64)
    region_poly = outline
    head_region = np.zeros((h, w), np.uint8)
    cv2.fillPoly(head_region, [np.round(region_poly).astype(np.int32)], 1)

    step = 0.06 * face_w
    boundary = _resample_closed(outline, step)
    oval = xy[list(FACE_OVAL)]
    # Keep outline points clear of the face oval (the mesh there comes from the landmarks).
    d_oval = _dist_to_polyline(boundary, np.vstack([oval, oval[:1]]))
    boundary = boundary[(d_oval > 0.4 * step) & ~_inside(oval, boundary)]
    # Interior fill points on a grid, away from the outline and the face.
    gstep = 0.12 * face_w
    gx, gy = np.meshgrid(np.arange(0, w, gstep), np.arange(0, h, gstep))
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
    inner = cv2.erode(head_region, np.ones((3, 3), np.uint8), iterations=max(int(0.5 * gstep), 1))
    gi = np.clip(np.round(grid).astype(int), 0, [w - 1, h - 1])
    grid = grid[inner[gi[:, 1], gi[:, 0]] > 0]
    grid = grid[~_inside(oval, grid)]
    grid = grid[_dist_to_polyline(grid, np.vstack([oval, oval[:1]])) > 0.5 * gstep]
    extra = np.vstack([boundary, grid])

    # Attachment to the head: 1 well above the static curve, fading to 0 on it.
    d_static = _dist_to_polyline(extra, static_curve)
    below = extra[:, 1] >= np.interp(extra[:, 0], static_curve[:, 0], static_curve[:, 1]) - 0.5
    t = np.clip(d_static / (0.9 * drop), 0.0, 1.0)
    extra_attach = np.where(below, 0.0, t * t * (3 - 2 * t))
    # Hair and neck lie around the ear plane; the static curve near the jaw's depth.
    z_back = float(np.mean(lm[[234, 454, 127, 356, 93, 323], 2]))
    z_jaw = float(np.mean(lm[list(JAW), 2]))
    extra_z = np.where(extra_attach > 0.999, z_back, z_jaw + (z_back - z_jaw) * extra_attach)

    n_face, n_extra = NUM_MESH_VERTICES, len(extra)
    teeth_index = np.arange(n_face + n_extra, n_face + n_extra + len(INNER_LIPS), dtype=np.int32)
    uv = np.vstack([xy, extra, xy[list(INNER_LIPS)]]).astype(np.float32)
    z_px = np.concatenate([lm[:NUM_MESH_VERTICES, 2], extra_z, lm[list(INNER_LIPS), 2]]).astype(np.float32)
    attach = np.concatenate([np.ones(n_face), extra_attach, np.ones(len(INNER_LIPS))]).astype(np.float32)
    deformable = np.zeros(len(uv), bool)
    deformable[:n_face] = True

    # Triangles. Back layer: Delaunay over the oval + outline + fill points, clipped to the
    # region (it also covers the face, as an under-layer that hides any crack).
    back_ids = np.concatenate([np.array(FACE_OVAL), n_face + np.arange(n_extra)])
    back_local = _delaunay_inside(uv[back_ids].astype(np.float64), region_poly)
    back_tris = back_ids[back_local]
    cent = uv[back_tris].mean(axis=1)
    in_oval = _inside(oval, cent)
    back_attach = attach[back_tris].min(axis=1)
    back_label = np.where(in_oval, LABEL_VALUES["skin"],
                          np.where(back_attach > 0.999, LABEL_VALUES["hair"], LABEL_VALUES["neck"]))

    # Face layer: MediaPipe's tessellation + eye openings (its holes), labelled by region.
    eye_r = _delaunay_inside(xy[list(RIGHT_EYE)], xy[list(RIGHT_EYE)])
    eye_l = _delaunay_inside(xy[list(LEFT_EYE)], xy[list(LEFT_EYE)])
    eye_r_tris = np.array(RIGHT_EYE)[eye_r]
    eye_l_tris = np.array(LEFT_EYE)[eye_l]
    face_tris = asset.face_triangles
    fc = xy[face_tris].mean(axis=1)
    face_label = np.where(_inside(xy[list(OUTER_LIPS)], fc), LABEL_VALUES["lips"], LABEL_VALUES["skin"])
    # Teeth: the photo's mouth opening, on its own vertex copies (rigid with the skull).
    inner = xy[list(INNER_LIPS)]
    teeth_local = _delaunay_inside(inner, inner)
    teeth_tris = teeth_index[teeth_local]

    triangles = np.vstack([back_tris, teeth_tris, face_tris, eye_r_tris, eye_l_tris]).astype(np.int32)
    layer = np.concatenate([np.full(len(back_tris), LAYER_BACK), np.full(len(teeth_tris), LAYER_TEETH),
                            np.full(len(face_tris) + len(eye_r_tris) + len(eye_l_tris), LAYER_FACE)])
    label = np.concatenate([back_label, np.full(len(teeth_tris), LABEL_VALUES["inside_mouth"]), face_label,
                            np.full(len(eye_r_tris), LABEL_VALUES["eye_right"]),
                            np.full(len(eye_l_tris), LABEL_VALUES["eye_left"])])
    # Orient every triangle counter-clockwise in the photo (lets the renderer cull folded ones).
    p = uv[triangles].astype(np.float64)
    cross = (p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1]) - (p[:, 1, 1] - p[:, 0, 1]) * (p[:, 2, 0] - p[:, 0, 0])
    flip = cross < 0
    triangles[flip] = triangles[flip][:, ::-1]

    return HeadMesh(uv=uv, z_px=z_px, attach=attach, deformable=deformable, triangles=triangles,
                    layer=layer.astype(np.int8), label=label.astype(np.int8), teeth_index=teeth_index,
                    head_region=head_region.astype(bool), static_curve=static_curve.astype(np.float32))


def asset_sha256() -> dict[str, str]:
    """SHA-256 of the bundled face files (recorded in the generator's metadata)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (PHOTO_FILE, MESH_FILE)}


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    for path in build_face_asset():
        print(f"wrote {path} ({path.stat().st_size} bytes)")
