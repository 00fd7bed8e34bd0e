"""A contact sheet of a generated clip: key frames (closed/open mouth, blink, brows, head turns),
one frame's ground-truth labels, and the mouth-opening curve against the audio loudness."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from talksplat.io import atomic_path, read_video
from talksplat.synthetic.generate import GT_JSON, VIDEO_NAME, load_ground_truth
from talksplat.synthetic.motion import loudness

_LABEL_COLOURS = np.array([[40, 40, 40], [230, 120, 40], [200, 170, 140], [120, 80, 30], [250, 210, 180],
                           [60, 160, 255], [60, 220, 120], [220, 60, 80], [150, 0, 150]], np.uint8)


def pick_key_frames(gt: dict[str, np.ndarray]) -> list[tuple[str, int]]:
    """(caption, frame index) of frames that show each ground-truth effect clearly."""
    m, br, bl, brow = gt["mouth_open"], gt["blink_right"], gt["blink_left"], gt["brow_raise"]
    yaw = gt["euler_deg"][:, 1] - np.median(gt["euler_deg"][:, 1])
    calm = (br < 0.05) & (bl < 0.05)
    score_closed = np.where(calm, m + brow, np.inf)
    score_open = np.where(calm, -m, np.inf)
    picks = [("mouth closed", int(np.argmin(score_closed))), ("mouth open", int(np.argmin(score_open))),
             ("blink", int(np.argmax(br + bl))), ("brows raised", int(np.argmax(brow - 0.3 * (br + bl)))),
             ("head turned", int(np.argmin(yaw))), ("head turned", int(np.argmax(yaw)))]
    return picks


def contact_sheet(out_dir: str | Path, png_path: str | Path | None = None) -> Path:
    """Write a PNG contact sheet for the clip in ``out_dir`` (default ``out_dir/contact_sheet.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    png = Path(png_path) if png_path is not None else out / "contact_sheet.png"
    gt = load_ground_truth(out)
    meta = json.loads((out / GT_JSON).read_text())
    frames = read_video(out / VIDEO_NAME)
    picks = pick_key_frames(gt)
    fps = int(meta["fps"])

    fig = plt.figure(figsize=(12.0, 7.4), dpi=110)
    grid = fig.add_gridspec(3, 4, height_ratios=[1, 1, 0.8], hspace=0.42, wspace=0.05)
    tiles = [*picks, ("labels (ground truth)", picks[1][1])]
    for k, (caption, idx) in enumerate(tiles[:7]):
        ax = fig.add_subplot(grid[k // 4, k % 4])
        if caption.startswith("labels") and "labels" in gt:
            lab = _LABEL_COLOURS[gt["labels"][idx]]
            ax.imshow((0.45 * frames[idx] + 0.55 * lab).astype(np.uint8))
        else:
            ax.imshow(frames[idx])
        detail = (f"open {gt['mouth_open_mm'][idx]:.1f} mm, blink {max(gt['blink_right'][idx], gt['blink_left'][idx]):.2f}"
                  f"\nbrow {gt['brow_raise'][idx]:.2f}, yaw {gt['euler_deg'][idx, 1]:+.1f} deg")
        ax.set_title(f"{caption} (frame {idx})\n{detail}", fontsize=8)
        ax.axis("off")
    ax = fig.add_subplot(grid[1, 3])
    ax.axis("off")
    cfg = meta["config"]
    src = ", ".join(str(s.get("utterance", s.get("file"))) for s in meta["audio"]["sources"])
    ax.text(0.0, 0.95, f"talksplat synth, seed {cfg['seed']}\n{meta['width']}x{meta['height']}, "
            f"{meta['num_frames']} frames, {meta['fps']} fps\nfocal {meta['camera']['fx']:.0f} px\n"
            f"speech: {src}\nmouth leads audio by {meta['audio']['mouth_lead_frames']} frames\n"
            "photo: NASA (public domain)\nspeech: LibriSpeech, CC BY 4.0",
            fontsize=8, va="top", family="monospace")
    ax = fig.add_subplot(grid[2, :])
    t = np.arange(len(gt["mouth_open"])) / fps
    ax.plot(t, loudness(gt["audio_rms_db"].astype(np.float64)), color="0.6", lw=0.8, label="audio loudness (0-1)")
    ax.plot(t, gt["mouth_open"], color="C3", lw=1.2, label="mouth_open (0-1)")
    ax.plot(t, np.maximum(gt["blink_right"], gt["blink_left"]), color="C0", lw=0.8, label="blink")
    ax.plot(t, gt["brow_raise"], color="C2", lw=0.8, label="brow_raise")
    for _, idx in picks:
        ax.axvline(idx / fps, color="k", lw=0.4, ls=":")
    ax.set_xlim(0, t[-1] if len(t) > 1 else 1)
    ax.set_xlabel("time (s)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, ncol=4, loc="upper right")
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)
    return png
