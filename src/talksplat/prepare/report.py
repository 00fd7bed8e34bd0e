"""Report images of a prepared subject: a contact sheet and pose/expression curves."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from talksplat.prepare import layout as L
from talksplat.prepare.face_model import FACE_MODEL, mesh_overlay

SHEET_FRAMES = 4                 # sample frames (rows) in the contact sheet
SHEET_CELL = 256                 # cell side in pixels
AXIS_LENGTH_MM = 60.0            # head axes drawn on the crop
LABEL_ALPHA = 0.55
# Label colours (RGB), index = label value.
LABEL_COLOURS = np.array([[0, 0, 0], [60, 90, 200], [200, 160, 60], [140, 70, 30], [240, 190, 150],
                          [40, 220, 40], [220, 40, 220], [230, 30, 30], [255, 255, 0]], np.uint8)
CURVE_FIGSIZE = (11, 9)
CURVE_DPI = 90


def _text(img: np.ndarray, text: str, y: int = 16) -> None:
    cv2.putText(img, text, (5, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, (5, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)


def _fit(img: np.ndarray) -> np.ndarray:
    return cv2.resize(img, (SHEET_CELL, SHEET_CELL), interpolation=cv2.INTER_AREA)


def _landmark_cell(frame: np.ndarray, lms: np.ndarray, K: np.ndarray, w2c: np.ndarray) -> np.ndarray:
    img = frame.copy()
    r = max(1, frame.shape[0] // 256)
    for x, y in lms[:, :2]:
        cv2.circle(img, (round(x), round(y)), r, (0, 255, 0), -1)
    axes = np.array([[0, 0, 0], [AXIS_LENGTH_MM, 0, 0], [0, AXIS_LENGTH_MM, 0], [0, 0, AXIS_LENGTH_MM]])
    cam = axes @ w2c[:3, :3].T + w2c[:3, 3]
    uv = (cam[:, :2] / cam[:, 2:3]) * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
    o = tuple(int(v) for v in np.round(uv[0]))
    for k, colour in ((1, (255, 0, 0)), (2, (0, 255, 0)), (3, (0, 0, 255))):
        cv2.line(img, o, tuple(int(v) for v in np.round(uv[k])), colour, 2 * r, cv2.LINE_AA)
    return img


def _label_cell(frame: np.ndarray, labels: np.ndarray) -> np.ndarray:
    colour = LABEL_COLOURS[labels]
    mix = (1 - LABEL_ALPHA) * frame.astype(np.float32) + LABEL_ALPHA * colour.astype(np.float32)
    return np.where(labels[..., None] == 0, frame, mix).astype(np.uint8)


def _source_frames(root: Path, picks: np.ndarray) -> dict[int, np.ndarray]:
    """The full-resolution frames ``picks`` (one decoding pass)."""
    from talksplat.io.video import iter_frames

    wanted, out = {int(p) for p in picks}, {}
    for i, (_, f) in enumerate(iter_frames(root / L.MEDIA_VIDEO)):
        if i in wanted:
            out[i] = f
        if i >= max(wanted):
            break
    return out


def _source_cell(frame: np.ndarray | None, crop: dict) -> np.ndarray:
    if frame is None:
        return np.zeros((SHEET_CELL, SHEET_CELL, 3), np.uint8)
    img = frame.copy()
    x0, y0, side = crop["x0"], crop["y0"], crop["side"]
    th = max(2, img.shape[0] // 200)
    cv2.rectangle(img, (x0, y0), (x0 + side - 1, y0 + side - 1), (255, 60, 60), th)
    h, w = img.shape[:2]
    s = max(h, w)
    canvas = np.zeros((s, s, 3), np.uint8)
    canvas[(s - h) // 2:(s - h) // 2 + h, (s - w) // 2:(s - w) // 2 + w] = img
    return canvas


def contact_sheet(root: str | Path) -> np.ndarray:
    """RGB image: rows = sample frames; columns = crop + landmarks + head axes, labels, source frame
    with the crop box; a last row with the background plate and the summary figures."""
    root = Path(root)
    frames = np.load(root / L.FRAMES, mmap_mode="r")
    masks = np.load(root / L.MASKS, mmap_mode="r")
    lms = np.load(root / L.LANDMARKS)
    cams = np.load(root / L.CAMERAS_NPZ)
    crop = json.loads((root / L.CROP_JSON).read_text())
    n = frames.shape[0]
    picks = np.linspace(0.1 * (n - 1), 0.9 * (n - 1), SHEET_FRAMES).round().astype(int)
    sources = _source_frames(root, picks)
    face = _face_model(root)
    rows = []
    for t in picks:
        frame = np.asarray(frames[t])
        a = _fit(_landmark_cell(frame, lms[t], cams["K"], cams["w2c"][t]))
        b = _fit(_label_cell(frame, np.asarray(masks[t])))
        c = _fit(_source_cell(sources.get(int(t)), crop))
        _text(a, f"frame {t}: landmarks, head axes")
        _text(b, "labels")
        _text(c, "source frame + crop box")
        cells = [a, b, c]
        if face is not None:
            cells.append(_fit(mesh_overlay(frame, face, int(t))))
            _text(cells[-1], f"head model fit: {float(face['landmark_error_px'][t]):.1f} px")
        rows.append(np.hstack(cells))
    bg = cv2.cvtColor(cv2.imread(str(root / L.BACKGROUND)), cv2.COLOR_BGR2RGB)
    plate = _fit(bg)
    _text(plate, "background plate")
    legend = np.full((SHEET_CELL, SHEET_CELL, 3), 40, np.uint8)
    from talksplat.core.labels import LABELS

    for k, name in LABELS.items():
        y = 20 + 24 * k
        cv2.rectangle(legend, (8, y - 12), (26, y + 4), tuple(int(v) for v in LABEL_COLOURS[k]), -1)
        _text(legend, f"    {k} {name}", y)
    info = np.full((SHEET_CELL, SHEET_CELL, 3), 40, np.uint8)
    summary_path = root / L.SUMMARY
    track = json.loads((root / L.TRACK_JSON).read_text())
    lines = [f"frames {n}", f"detection {100 * track['detection_rate']:.1f}%",
             f"focal {float(cams['K'][0, 0]):.0f} px (crop)",
             f"reproj {float(np.mean(cams['landmark_error_px'])):.2f} px"]
    if summary_path.exists():
        s = json.loads(summary_path.read_text())
        lines.append(f"jitter {s.get('jitter_raw_deg', 0):.3f} -> {s.get('jitter_deg', 0):.3f} deg")
    for i, line in enumerate(lines):
        _text(info, line, 20 + 22 * i)
    last = [plate, legend, info]
    if face is not None:
        last.append(np.full((SHEET_CELL, SHEET_CELL, 3), 40, np.uint8))
        for i, line in enumerate(["head model (ICT-FaceKit)",
                                  f"fit {float(np.mean(face['landmark_error_px'])):.2f} px mean",
                                  f"{100 * float(np.mean(face['landmark_error_iod'])):.1f}% of inter-ocular",
                                  f"identity |a| {float(np.linalg.norm(face['identity'])):.2f}"]):
            _text(last[-1], line, 20 + 22 * i)
    rows.append(np.hstack(last))
    return np.vstack(rows)


def _face_model(root: Path) -> dict[str, np.ndarray] | None:
    """face_model.npz's arrays, or None for a subject prepared before the head-model step."""
    path = root / FACE_MODEL
    if not path.exists():
        return None
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def curves_plot(root: str | Path) -> np.ndarray:
    """RGB image of the head pose (raw PnP vs stabilised), reprojection error and expression curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = Path(root)
    cams = np.load(root / L.CAMERAS_NPZ)
    with np.load(root / L.EXPRESSIONS) as ex:
        core, names = ex["core"], [str(s) for s in ex["core_names"]]
        blink, lips_part, lip_mm = ex["blink"], ex["lips_part"], ex["lip_open_mm"]
    n = core.shape[0]
    t = np.arange(n)
    face = _face_model(root)
    fig, axes = plt.subplots(4 if face is None else 5, 1, figsize=CURVE_FIGSIZE, sharex=True)
    for k, name in enumerate(("pitch", "yaw", "roll")):
        line, = axes[0].plot(t, cams["euler_raw_deg"][:, k], lw=0.6, alpha=0.5)
        axes[0].plot(t, cams["euler_deg"][:, k], lw=1.2, color=line.get_color(), label=f"{name}")
    axes[0].set_ylabel("head angle (deg)")
    axes[0].set_title("head pose: thin = per-frame landmark PnP, thick = stabilised")
    axes[0].legend(loc="upper right", fontsize=8)
    axes[1].plot(t, cams["landmark_error_raw_px"], lw=0.6, label="raw PnP")
    axes[1].plot(t, cams["landmark_error_px"], lw=0.8, label="stabilised")
    axes[1].set_ylabel("landmark reproj. (px)")
    axes[1].legend(loc="upper right", fontsize=8)
    for k, name in enumerate(names):
        axes[2].plot(t, core[:, k], lw=0.8, label=name)
    axes[2].set_ylabel("core coefficients")
    axes[2].legend(loc="upper right", fontsize=7, ncol=4)
    axes[3].plot(t, blink, lw=0.8, label="blink (AU45-like)")
    axes[3].plot(t, lips_part, lw=0.8, label="lips part (AU25-like)")
    ax2 = axes[3].twinx()
    ax2.plot(t, lip_mm, lw=0.8, color="k", alpha=0.6, label="lip opening (mm)")
    ax2.set_ylabel("lip opening (mm)")
    axes[3].set_ylabel("[0, 1]")
    axes[3].legend(loc="upper left", fontsize=8)
    if face is not None:
        names53 = [str(s) for s in face["expression_names"]]
        for name in ("jawOpen", "eyeBlink_L", "eyeBlink_R"):
            axes[4].plot(t, face["expression"][:, names53.index(name)], lw=0.8, label=name)
        axes[4].set_ylabel("head model weights")
        axes[4].legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("frame")
    split_path = root / L.SPLIT_JSON
    if split_path.exists():
        start = json.loads(split_path.read_text())["val"]["start"]
        for ax in axes:
            ax.axvspan(start, n, color="grey", alpha=0.12)
    fig.tight_layout()
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return img
