"""Rendering the rig: per-triangle affine texture mapping from the photo, via an ID buffer.

Each frame the mesh is projected at ``supersample`` times the output size; triangles are filled
back to front into an int32 ID buffer (background layer, mouth cavity, teeth, then the face mesh
sorted by depth); every covered pixel then looks up the photo through its triangle's affine map
(one ``cv2.remap`` for the whole frame), is composited over a static plate (procedural backdrop +
the torso), and the frame is area-downsampled. The same ID buffer gives exact label masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from talksplat.synthetic import template as T
from talksplat.synthetic.rig import HeadRig

CAVITY_LABEL = T.LABEL_VALUES["inside_mouth"]
NUM_LABELS = len(T.LABEL_VALUES)


@dataclass
class Frame:
    """One rendered frame and what is exactly known about it."""

    image: np.ndarray          # (H, W, 3) uint8 RGB
    labels: np.ndarray         # (H, W) uint8 T.LABEL_VALUES (majority over the supersamples)
    coverage: np.ndarray       # (H, W) float32 person opacity (0 = pure backdrop)
    landmarks: np.ndarray      # (468, 2) float32 projected face-mesh vertices, output pixels
    mouth_open_px: float       # distance between inner-lip centres 13 and 14, output pixels


def make_backdrop(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A studio-like mottled backdrop, (H, W, 3) float32 RGB in [0, 255]."""
    palettes = np.array([[176, 178, 182], [150, 164, 178], [186, 176, 166], [140, 160, 156],
                         [168, 160, 176]], dtype=np.float32)
    base = palettes[rng.integers(len(palettes))] * rng.uniform(0.9, 1.05)
    small = rng.normal(0.0, 1.0, (8, 8, 3)).astype(np.float32)
    lowf = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    lowf = cv2.GaussianBlur(lowf, (0, 0), sigmaX=max(width, height) / 14)
    lum = lowf.mean(axis=2, keepdims=True)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    r2 = ((xx - width / 2) / width) ** 2 + ((yy - height * 0.45) / height) ** 2
    vignette = (1.0 - 0.55 * r2)[..., None]
    gradient = (1.0 - 0.12 * (yy / height))[..., None]
    img = base * vignette * gradient * (1.0 + 0.10 * lum / (np.abs(lum).max() + 1e-6)) + 6.0 * lowf
    return np.clip(img, 0, 255).astype(np.float32)


def decontaminate(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 RGBA -> float32 RGBA (alpha in [0, 1]) whose semi-transparent pixels take
    the colour of nearby opaque ones, so the photo's own backdrop does not fringe the matte."""
    rgb = rgba[..., :3].astype(np.float32)
    alpha = rgba[..., 3].astype(np.float32) / 255.0
    solid = (alpha > 0.9).astype(np.float32)
    est = rgb.copy()
    todo = solid < 1
    for sigma in (2.0, 6.0, 18.0):
        num = cv2.GaussianBlur(rgb * solid[..., None], (0, 0), sigma)
        den = cv2.GaussianBlur(solid, (0, 0), sigma)
        ok = todo & (den > 0.02)
        est[ok] = num[ok] / den[ok][:, None]
        todo &= ~ok
    out = np.dstack([np.where(solid[..., None] > 0, rgb, est), alpha])
    return out.astype(np.float32)


class Renderer:
    """Renders frames of a :class:`HeadRig` at ``rig.camera`` resolution."""

    def __init__(self, rig: HeadRig, backdrop_rng: np.random.Generator, supersample: int = 2) -> None:
        self.rig = rig
        self.mesh = rig.mesh
        self.ss = int(supersample)
        self.cam = rig.camera
        self.icam = rig.camera.scaled(self.ss)
        h, w = self.icam.height, self.icam.width
        asset = T.load_face_asset()
        self.tex = decontaminate(asset.rgba)
        # Static plate: backdrop + the torso (photo outside the mesh's head region).
        k, centre = rig.photo_to_image
        ki = k * self.ss
        affine = np.array([[ki, 0, self.icam.cx - ki * centre[0]], [0, ki, self.icam.cy - ki * centre[1]]])
        torso_alpha = self.tex[..., 3] * ~self.mesh.head_region
        # Let the plate run a few pixels under the mesh along the neck seam (no cracks).
        seam = np.zeros(torso_alpha.shape, np.uint8)
        cv2.polylines(seam, [np.round(self.mesh.static_curve * 4).astype(np.int32)], False, 1,
                      thickness=12, lineType=cv2.LINE_8, shift=2)
        torso_alpha = np.maximum(torso_alpha, self.tex[..., 3] * seam)
        torso = np.dstack([self.tex[..., :3], torso_alpha])
        torso_i = cv2.warpAffine(torso, affine, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                 borderValue=(0, 0, 0, 0))
        self.backdrop = make_backdrop(h, w, backdrop_rng)
        a = torso_i[..., 3:4]
        self.plate = self.backdrop * (1 - a) + torso_i[..., :3] * a
        self.plate_alpha = a[..., 0]
        self.plate_label = np.where(self.plate_alpha >= 0.5, T.LABEL_VALUES["torso"], T.LABEL_VALUES["background"]).astype(np.uint8)
        tri = self.mesh.triangles
        self.order_back = np.where(self.mesh.layer == T.LAYER_BACK)[0]
        self.order_teeth = np.where(self.mesh.layer == T.LAYER_TEETH)[0]
        self.order_face = np.where(self.mesh.layer == T.LAYER_FACE)[0]
        self.tri_label = np.append(self.mesh.label, CAVITY_LABEL).astype(np.uint8)
        force = np.isin(self.mesh.label, list(T.FACE_LABELS) + [CAVITY_LABEL])
        self.tri_force_alpha = np.append(force, True)
        self.cavity_id = len(tri)
        self.inner_lip = np.array(T.INNER_LIPS)
        self.plate = self.plate.astype(np.float32)
        self.plate_alpha = self.plate_alpha.astype(np.float32)

    def render(self, v_head: np.ndarray, r: np.ndarray, t: np.ndarray) -> Frame:
        """Render head-frame vertices ``v_head`` (N, 3) at pose (R, t)."""
        icam, mesh = self.icam, self.mesh
        h, w = icam.height, icam.width
        x_cam = self.rig.to_camera(v_head, r, t)
        pix = icam.project(x_cam)                      # (N, 2) internal pixels
        tri = mesh.triangles
        p = pix[tri]                                   # (M, 3, 2)
        e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
        area2 = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        visible = area2 > 1e-3                         # CCW as in the photo; folded/empty culled
        # Affine map image -> photo for each triangle: uv = B @ (x - p0) + q0, B = Q @ inv(P).
        q = mesh.uv[tri].astype(np.float64)
        f1, f2 = q[:, 1] - q[:, 0], q[:, 2] - q[:, 0]
        inv_det = np.where(visible, 1.0 / np.where(visible, area2, 1.0), 0.0)
        # inv(P) with P = [[e1x, e2x], [e1y, e2y]]
        i00, i01 = e2[:, 1] * inv_det, -e2[:, 0] * inv_det
        i10, i11 = -e1[:, 1] * inv_det, e1[:, 0] * inv_det
        b00 = f1[:, 0] * i00 + f2[:, 0] * i10
        b01 = f1[:, 0] * i01 + f2[:, 0] * i11
        b10 = f1[:, 1] * i00 + f2[:, 1] * i10
        b11 = f1[:, 1] * i01 + f2[:, 1] * i11
        c0 = q[:, 0, 0] - b00 * p[:, 0, 0] - b01 * p[:, 0, 1]
        c1 = q[:, 0, 1] - b10 * p[:, 0, 0] - b11 * p[:, 0, 1]
        a_flat = np.vstack([np.stack([b00, b01, c0, b10, b11, c1], axis=1), np.zeros((1, 6))]).astype(np.float32)

        # Work inside the bounding box of the projected mesh only.
        x0 = int(np.clip(np.floor(pix[:, 0].min()) - 2, 0, w))
        y0 = int(np.clip(np.floor(pix[:, 1].min()) - 2, 0, h))
        x1 = int(np.clip(np.ceil(pix[:, 0].max()) + 3, x0, w))
        y1 = int(np.clip(np.ceil(pix[:, 1].max()) + 3, y0, h))
        img = self.plate.copy()
        labels_i = self.plate_label.copy()
        cov_i = self.plate_alpha.copy()
        if x1 > x0 and y1 > y0:
            self._render_roi(pix, p, visible, a_flat, x_cam, (x0, y0, x1, y1), img, labels_i, cov_i)

        # Downsample to the output size.
        out_w, out_h = self.cam.width, self.cam.height
        image = cv2.resize(img, (out_w, out_h), interpolation=cv2.INTER_AREA)
        coverage = cv2.resize(cov_i, (out_w, out_h), interpolation=cv2.INTER_AREA)
        labels = self._majority(labels_i)
        lm2d = self.cam.project(x_cam[: T.NUM_MESH_VERTICES]).astype(np.float32)
        gap_px = float(np.linalg.norm(lm2d[T.LOWER_LIP_CENTER] - lm2d[T.UPPER_LIP_CENTER]))
        return Frame(image=image, labels=labels, coverage=coverage, landmarks=lm2d, mouth_open_px=gap_px)

    def _render_roi(self, pix: np.ndarray, p: np.ndarray, visible: np.ndarray, a_flat: np.ndarray,
                    x_cam: np.ndarray, box: tuple[int, int, int, int], img: np.ndarray,
                    labels_i: np.ndarray, cov_i: np.ndarray) -> None:
        """Rasterise and texture the mesh inside ``box``, compositing into img/labels/cov in place."""
        x0, y0, x1, y1 = box
        bw, bh = x1 - x0, y1 - y0
        ids = np.full((bh, bw), -1, np.int32)
        off = np.array([x0, y0], np.float64)
        pts = np.round((p - off) * 16).astype(np.int32)
        tri = self.mesh.triangles

        def fill(order: np.ndarray) -> None:
            for i in order:
                if visible[i]:
                    cv2.fillConvexPoly(ids, pts[i], int(i), cv2.LINE_8, 4)

        fill(self.order_back)
        lips = pix[self.inner_lip] - off
        cv2.fillPoly(ids, [np.round(lips * 16).astype(np.int32)], self.cavity_id, cv2.LINE_8, 4)
        fill(self.order_teeth)
        depth = x_cam[tri[self.order_face], 2].mean(axis=1)
        fill(self.order_face[np.argsort(-depth, kind="stable")])

        flat = ids.ravel()
        idx = np.flatnonzero(flat >= 0)
        if idx.size == 0:
            return
        tid = flat[idx]
        ys = (idx // bw + y0).astype(np.float32)
        xs = (idx % bw + x0).astype(np.float32)
        coef = a_flat[tid]
        map_x = np.full(bh * bw, -10.0, np.float32)
        map_y = np.full(bh * bw, -10.0, np.float32)
        map_x[idx] = coef[:, 0] * xs + coef[:, 1] * ys + coef[:, 2]
        map_y[idx] = coef[:, 3] * xs + coef[:, 4] * ys + coef[:, 5]
        samp = cv2.remap(self.tex, map_x.reshape(bh, bw), map_y.reshape(bh, bw), cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0)).reshape(-1, 4)[idx]
        alpha = np.where(self.tri_force_alpha[tid], 1.0, samp[:, 3]).astype(np.float32)
        rgb = samp[:, :3]
        cav = tid == self.cavity_id
        if cav.any():
            rgb[cav] = self._cavity_colour(ys[cav], xs[cav], pix)
        roi_img = img[y0:y1, x0:x1].reshape(-1, 3)
        roi_lab = labels_i[y0:y1, x0:x1].reshape(-1)
        roi_cov = cov_i[y0:y1, x0:x1].reshape(-1)
        al = alpha[:, None]
        roi_img[idx] = roi_img[idx] * (1 - al) + rgb * al
        roi_lab[idx] = np.where(alpha >= 0.5, self.tri_label[tid], roi_lab[idx])
        roi_cov[idx] = alpha + (1 - alpha) * roi_cov[idx]
        img[y0:y1, x0:x1] = roi_img.reshape(bh, bw, 3)
        labels_i[y0:y1, x0:x1] = roi_lab.reshape(bh, bw)
        cov_i[y0:y1, x0:x1] = roi_cov.reshape(bh, bw)

    def _majority(self, labels_i: np.ndarray) -> np.ndarray:
        """Most frequent label in each ss x ss block (ties -> the smaller label)."""
        s = self.ss
        h, w = self.cam.height, self.cam.width
        blocks = labels_i.reshape(h, s, w, s).transpose(0, 2, 1, 3).reshape(h * w, s * s)
        key = np.arange(h * w, dtype=np.int64)[:, None] * NUM_LABELS + blocks
        counts = np.bincount(key.ravel(), minlength=h * w * NUM_LABELS).reshape(h * w, NUM_LABELS)
        return np.argmax(counts, axis=1).astype(np.uint8).reshape(h, w)

    def _cavity_colour(self, ys: np.ndarray, xs: np.ndarray, pix: np.ndarray) -> np.ndarray:
        """Colours (K, 3) of the visible mouth cavity: dark throat, tongue towards the lower lip."""
        top = pix[T.UPPER_LIP_CENTER]
        bottom = pix[T.LOWER_LIP_CENTER]
        left, right = pix[78], pix[308]
        span = max(float(bottom[1] - top[1]), 1.0)
        v = np.clip((ys - top[1]) / span, 0.0, 1.0)[:, None]
        half = max(float(abs(right[0] - left[0])) / 2, 1.0)
        u = np.clip(np.abs(xs - (left[0] + right[0]) / 2) / half, 0.0, 1.0)[:, None]
        throat = np.array([38.0, 10.0, 12.0])
        tongue = np.array([150.0, 66.0, 70.0])
        t = np.clip((v - 0.45) / 0.55, 0.0, 1.0) ** 1.5
        colour = throat * (1 - t) + tongue * t
        return (colour * (1.0 - 0.55 * u ** 2)).astype(np.float32)
