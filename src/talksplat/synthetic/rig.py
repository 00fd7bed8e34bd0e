"""The 3D head rig: the photo mesh lifted to millimetres, its head frame, pose and deformations.

Conventions (also in docs/synthetic.md):
- Camera: OpenCV pinhole, x right, y down, z forward (away from the camera); pixel centres at
  integer coordinates; no distortion.
- Head frame: origin midway between face-oval landmarks 234 and 454 (the cheeks in front of the
  ears); x from the subject's right eye to the left eye, y down (eyes to chin), z = x cross y
  (pointing into the head, away from a camera the face looks at). Units: millimetres.
- A head point maps to the camera by X_cam = R @ X_head + t.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from talksplat.synthetic import template as T


@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics of an image of ``width`` x ``height`` pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def project(self, x_cam: np.ndarray) -> np.ndarray:
        """(N, 3) camera-space points -> (N, 2) pixel coordinates."""
        z = x_cam[:, 2:3]
        return np.hstack([self.fx * x_cam[:, :1] / z + self.cx, self.fy * x_cam[:, 1:2] / z + self.cy])

    def scaled(self, factor: int) -> Camera:
        """The camera of an image ``factor`` times larger covering the same view (supersampling)."""
        return Camera(self.fx * factor, self.fy * factor, (self.cx + 0.5) * factor - 0.5,
                      (self.cy + 0.5) * factor - 0.5, self.width * factor, self.height * factor)


@dataclass(frozen=True)
class FaceParams:
    """Per-frame expression parameters, each in [0, 1]."""

    mouth_open: float = 0.0   # 0 lips closed ... 1 widest (inner-lip gap = MAX_GAP_MM)
    blink_right: float = 0.0  # subject's right eye: 0 open as in the photo, 1 closed
    blink_left: float = 0.0
    brow_raise: float = 0.0   # 0 as in the photo, 1 raised by BROW_RAISE_MM


def euler_to_matrix(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """R = Rz(roll) @ Ry(yaw) @ Rx(pitch), angles in radians -> (3, 3)."""
    cx, sx, cy, sy, cz, sz = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw), np.cos(roll), np.sin(roll)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def matrix_to_euler(r: np.ndarray) -> tuple[float, float, float]:
    """Inverse of :func:`euler_to_matrix`: (pitch, yaw, roll) in radians."""
    yaw = float(np.arcsin(np.clip(-r[2, 0], -1.0, 1.0)))
    pitch = float(np.arctan2(r[2, 1], r[2, 2]))
    roll = float(np.arctan2(r[1, 0], r[0, 0]))
    return pitch, yaw, roll


def matrix_to_rotvec(r: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> (3,) axis * angle (radians)."""
    cos = np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)
    angle = np.arccos(cos)
    if angle < 1e-9:
        return np.zeros(3)
    v = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    if np.pi - angle < 1e-6:  # 180 degrees: axis from the symmetric part
        w, vecs = np.linalg.eigh((r + np.eye(3)) / 2.0)
        return vecs[:, np.argmax(w)] * angle
    return v / (2.0 * np.sin(angle)) * angle


def _interp_handles(points: np.ndarray, handles: np.ndarray, disp: np.ndarray, kernel_mm: float,
                    falloff_mm: float) -> np.ndarray:
    """Smooth displacement field from handles: normalised Gaussian interpolation of the handle
    displacements, times a Gaussian falloff of the distance to the nearest handle.

    points (P, 3), handles (H, 3), disp (H, 3) -> (P, 3)."""
    d = np.linalg.norm(points[:, None, :] - handles[None, :, :], axis=-1)
    k = np.exp(-((d / kernel_mm) ** 2)) + 1e-12
    field = (k[..., None] * disp[None]).sum(1) / k.sum(1, keepdims=True)
    return field * np.exp(-((d.min(axis=1) / falloff_mm) ** 2))[:, None]


class HeadRig:
    """The mesh in 3D: rest geometry, head frame, deformation bases and the jaw."""

    IPD_MM = 62.0          # distance between the iris centres of the template
    MAX_GAP_MM = 24.0      # inner-lip gap at mouth_open = 1
    BROW_RAISE_MM = 4.0
    TEETH_DEPTH_MM = 2.0   # teeth sit this far behind the inner lip line
    NECK_PIVOT_MM = (0.0, 60.0, 10.0)   # head rotation pivot (head frame)
    JAW_PIVOT_MM = (0.0, 5.0, 10.0)     # temporomandibular axis point (head frame), axis = x

    def __init__(self, camera: Camera, framing: float = 2.75, z_scale: float = 1.0) -> None:
        """Lift the photo mesh so that the rest pose, seen through ``camera``, frames the head with
        a square crop ``framing`` face-widths wide (camera = that crop of a virtual photo camera)."""
        self.mesh = mesh = T.build_head_mesh()
        asset = T.load_face_asset()
        lm = asset.landmarks.astype(np.float64)
        self.camera = camera
        face_w = float(np.linalg.norm(lm[454, :2] - lm[234, :2]))
        eyes = (lm[33, :2] + lm[263, :2]) / 2
        crop = framing * face_w
        centre = eyes + np.array([0.0, 0.36 * face_w])
        # The photo's own camera: the output camera is a crop of it, scaled by k.
        k = camera.width / crop
        self.photo_to_image = (k, centre)   # u_img = k * (u_photo - centre) + (cx, cy)
        f_photo = camera.fx / k
        ipd_px = float(np.linalg.norm(lm[T.RIGHT_IRIS_CENTER, :2] - lm[T.LEFT_IRIS_CENTER, :2]))
        z_face = f_photo * self.IPD_MM / ipd_px
        mm_per_px = z_face / f_photo
        uv = mesh.uv.astype(np.float64)
        z = z_face + mesh.z_px.astype(np.float64) * mm_per_px * z_scale
        x_rest = np.stack([(uv[:, 0] - centre[0]) * z / f_photo, (uv[:, 1] - centre[1]) * z / f_photo, z], axis=1)
        x_rest[mesh.teeth_index, 2] += self.TEETH_DEPTH_MM
        self.x_rest_cam = x_rest                    # (N, 3) camera mm, rest pose
        self.mm_per_px = mm_per_px

        # Head frame from the landmarks.
        origin = (x_rest[234] + x_rest[454]) / 2
        ex = x_rest[263] - x_rest[33]
        ex /= np.linalg.norm(ex)
        ey = x_rest[152] - (x_rest[33] + x_rest[263]) / 2
        ey -= ex * (ey @ ex)
        ey /= np.linalg.norm(ey)
        ez = np.cross(ex, ey)
        self.r_rest = np.stack([ex, ey, ez], axis=1)   # head -> camera
        self.t_rest = origin
        self.v_rest = (x_rest - origin) @ self.r_rest   # (N, 3) head frame
        self._build_bases()

    # ------------------------------------------------------------------ deformation bases
    def _build_bases(self) -> None:
        v, mesh = self.v_rest, self.mesh
        n = len(v)
        face = np.arange(T.NUM_MESH_VERTICES)
        up, lo = np.array(T.UPPER_INNER_LIP), np.array(T.LOWER_INNER_LIP)
        corners = np.array([78, 308])
        gap = v[lo, 1] - v[up, 1]                        # (9,) photo inner-lip gaps, mm
        self.gap_rest_mm = float(v[T.LOWER_LIP_CENTER, 1] - v[T.UPPER_LIP_CENTER, 1])
        # Mouth line: midpoints of the inner-lip pairs (+ corners), as y(x).
        mid = np.vstack([v[corners], (v[up] + v[lo]) / 2])
        order = np.argsort(mid[:, 0])
        mline_x, mline_y = mid[order, 0], mid[order, 1]
        y_line = np.interp(v[:, 0], mline_x, mline_y)
        upper_side = v[:, 1] < y_line
        x_c = float(np.mean(v[corners, 0]))
        half_w = float(abs(v[308, 0] - v[78, 0]) / 2)

        # Lip closure (c = 1: the photo's open smile closed, upper lip 40%, lower lip 60%).
        closure = np.zeros((n, 3))
        hu = np.vstack([v[corners], v[up]])
        hl = np.vstack([v[corners], v[lo]])
        du = np.zeros((len(hu), 3))
        du[2:, 1] = 0.4 * gap
        dl = np.zeros((len(hl), 3))
        dl[2:, 1] = -0.6 * gap
        sel_u = face[upper_side[face]]
        sel_l = face[~upper_side[face]]
        closure[sel_u] = _interp_handles(v[sel_u], hu, du, 4.0, 7.0)
        closure[sel_l] = _interp_handles(v[sel_l], hl, dl, 4.0, 7.0)
        closure[up] = du[2:]
        closure[lo] = dl[2:]
        closure[corners] = 0.0
        self.closure = closure

        # Jaw weights: lower face, ramping in below the mouth line, wider ramp towards the ears.
        dy = v[:, 1] - y_line
        h = 4.0 + np.maximum(0.0, np.abs(v[:, 0] - x_c) - half_w)
        s = np.clip(dy / h, 0.0, 1.0)
        jaw_w = np.where(mesh.deformable & ~upper_side, s * s * (3 - 2 * s), 0.0)
        jaw_w[corners] = 0.0
        self.jaw_w = jaw_w
        self.jaw_pivot = np.array(self.JAW_PIVOT_MM)
        # Lower-lip-centre drop per radian of jaw rotation (for mouth_open -> angle).
        self._jaw_gain = float(self._rotate_jaw(v[[T.LOWER_LIP_CENTER]], np.array([1.0]), 1e-3)[0, 1]
                               - v[T.LOWER_LIP_CENTER, 1]) / 1e-3

        # Blinks: upper lid down to 20% above the lower lid, lower lid up to meet it.
        self.blink = {}
        for name, eye, ulid, llid in (("right", T.RIGHT_EYE, T.RIGHT_UPPER_LID, T.RIGHT_LOWER_LID),
                                      ("left", T.LEFT_EYE, T.LEFT_UPPER_LID, T.LEFT_LOWER_LID)):
            ul, ll = np.array(ulid), np.array(llid)
            eye_ids = np.array(eye)
            meet = v[ll] + 0.2 * (v[ul] - v[ll])
            corners_e = np.setdiff1d(eye_ids, np.concatenate([ul, ll]))
            ex_ = v[eye_ids, 0]
            lid_x = np.concatenate([v[corners_e, 0], v[ul, 0]])
            lid_y = np.concatenate([v[corners_e, 1], v[ul, 1]])
            o = np.argsort(lid_x)
            above = v[:, 1] < np.interp(v[:, 0], lid_x[o], lid_y[o])
            near = (v[:, 0] > ex_.min() - 8) & (v[:, 0] < ex_.max() + 8) & mesh.deformable
            basis = np.zeros((n, 3))
            hu_ = np.vstack([v[corners_e], v[ul]])
            du_ = np.vstack([np.zeros((len(corners_e), 3)), meet - v[ul]])
            hl_ = np.vstack([v[corners_e], v[ll]])
            dl_ = np.vstack([np.zeros((len(corners_e), 3)), meet - v[ll]])
            sa = np.where(near & above)[0]
            sb = np.where(near & ~above)[0]
            basis[sa] = _interp_handles(v[sa], hu_, du_, 3.0, 5.0)
            basis[sb] = _interp_handles(v[sb], hl_, dl_, 3.0, 2.5)
            basis[ul] = meet - v[ul]
            basis[ll] = meet - v[ll]
            basis[corners_e] = 0.0
            self.blink[name] = basis

        # Brow raise: brows up (and a little back), fading over the forehead and upper lids.
        brows = np.array(T.RIGHT_BROW + T.LEFT_BROW)
        db = np.tile(np.array([0.0, -self.BROW_RAISE_MM, 0.5]), (len(brows), 1))
        brow = np.zeros((n, 3))
        brow[face] = _interp_handles(v[face], v[brows], db, 8.0, 10.0)
        brow[np.array(T.RIGHT_EYE + T.LEFT_EYE)] *= 0.3
        brow[face[v[face, 1] > float(np.max(v[list(T.RIGHT_EYE + T.LEFT_EYE), 1]))]] = 0.0
        self.brow = brow

    def _rotate_jaw(self, pts: np.ndarray, weights: np.ndarray, angle: float) -> np.ndarray:
        """Rotate pts (P, 3) about the jaw axis (head x through JAW_PIVOT) by weights * angle."""
        a = weights * angle
        c, s = np.cos(a), np.sin(a)
        y = pts[:, 1] - self.jaw_pivot[1]
        z = pts[:, 2] - self.jaw_pivot[2]
        # Positive angle opens the mouth: points in front of the pivot (z < 0) move down (+y).
        out = pts.copy()
        out[:, 1] = self.jaw_pivot[1] + c * y - s * z
        out[:, 2] = self.jaw_pivot[2] + s * y + c * z
        return out

    def deform(self, p: FaceParams) -> np.ndarray:
        """Head-frame vertices (N, 3) for expression ``p``."""
        gap = float(np.clip(p.mouth_open, 0.0, 1.0)) * self.MAX_GAP_MM
        closure = max(0.0, 1.0 - gap / self.gap_rest_mm)
        angle = max(0.0, gap - self.gap_rest_mm) / self._jaw_gain
        v = (self.v_rest + closure * self.closure + p.blink_right * self.blink["right"]
             + p.blink_left * self.blink["left"] + p.brow_raise * self.brow)
        if angle > 0:
            v = self._rotate_jaw(v, self.jaw_w, angle)
        return v

    # ------------------------------------------------------------------ pose
    def pose(self, pitch: float, yaw: float, roll: float, dt_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Head pose (R, t) for a rotation relative to the rest pose about the neck pivot
        (angles in radians, applied in head axes) plus a camera-space translation offset (mm)."""
        dr = euler_to_matrix(pitch, yaw, roll)
        p = np.array(self.NECK_PIVOT_MM)
        r = self.r_rest @ dr
        t = self.r_rest @ (p - dr @ p) + self.t_rest + np.asarray(dt_mm, dtype=np.float64)
        return r, t

    def to_camera(self, v_head: np.ndarray, r: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Camera-space vertices (N, 3): head-attached ones by (R, t), torso-attached ones at
        rest, the neck strip in between by its attachment weight."""
        moving = v_head @ r.T + t
        a = self.mesh.attach[:, None].astype(np.float64)
        return a * moving + (1.0 - a) * self.x_rest_cam
