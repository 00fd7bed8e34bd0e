"""Where does a TalkingGaussian avatar's mouth interior come from? (issue #20, docs/fidelity.md)

    .venv/bin/python benchmarks/fidelity_mouth_probe.py SUBJECT_DIR RUN_DIR [SHEET.png]

On the 10 most open training frames (tracked lip states) and the 10 most open held-out frames
(lip states predicted from audio), inside the inner-lip polygon of the real frame: its share of the
L1 loss (whole image, and with the mouth-box term), the face and inside-mouth layers' alpha, how many
Gaussians of each layer project there, PSNR and the sharpness ratio (gradient energy ours / real).
The face layer's alpha over the lips, on those frames and on the 10 most shut training frames
(a face layer that went transparent over the whole mouth shows it on shut frames too). Then how far
the render's mouth changes between the conditions of a shut and an open training frame
(same camera) compared with the real frames, and the layers' sizes. SHEET.png (held-out: real |
render | face-layer alpha, mouth crops x4) is scratch only: never commit images of real people.
"""
import sys

import numpy as np
import torch

import talksplat  # noqa: F401  - before torch work, so talksplat's OpenMP settings apply
from talksplat.core.labels import LIPS
from talksplat.engine.losses import mouth_box
from talksplat.eval import metrics as M
from talksplat.gaussians import rasterize
from talksplat.recipes import load_avatar

torch.set_num_threads(1)


def projected(data, means, w2c):
    cam = means @ w2c[:3, :3].T + w2c[:3, 3]
    return (cam[:, :2] / cam[:, 2:3] * torch.stack([data.K[0, 0], data.K[1, 1]]) + data.K[:2, 2] - 0.5).numpy()


def count_inside(uv, opacity, mask):
    u = np.round(uv).astype(int)
    ok = (u[:, 0] >= 0) & (u[:, 0] < mask.shape[1]) & (u[:, 1] >= 0) & (u[:, 1] < mask.shape[0])
    hit = np.zeros(len(uv), bool)
    hit[ok] = mask[u[ok, 1], u[ok, 0]]
    return hit.sum(), (hit & (opacity > 0.5)).sum()


@torch.no_grad()
def frame_figures(av, t, held_out):
    data, rec, size = av.subject, av.recipe, av.subject.size
    cond = rec.conditions(t) if held_out else rec.training_conditions(t, None)
    inner = M.mouth_interior_mask(data.landmarks_px(t), (size, size))
    if inner.sum() < 10:
        return None, None
    image, real = av.render(t, cond)["image"].numpy(), data.image(t).numpy()
    lips = data.labels(t).numpy() == LIPS
    err = np.abs(image - real).mean(-1)
    box = np.zeros_like(inner)
    box[mouth_box(data.labels(t))] = True
    layers = {name: rec._deformed(name, cond) for name in ("face", "mouth")}
    alpha = {name: rasterize(*g.values(), data.w2c[t], data.K, size, size, with_depth=False).alpha[..., 0].numpy()
             for name, g in layers.items()}
    counts = {name: count_inside(projected(data, g["means"], data.w2c[t]), g["opacities"].reshape(-1).numpy(), inner)
              for name, g in layers.items()}
    weights = rec.cfg.losses
    in_l1, all_l1 = weights.l1 * err[inner].sum() / err.size, weights.l1 * err.mean()
    in_box, all_box = weights.mouth_box * err[inner].sum() / box.sum(), weights.mouth_box * err[box].mean()
    row = {"interior_px": inner.sum(), "loss_share_l1": in_l1 / all_l1,
           "loss_share_l1_and_box": (in_l1 + in_box) / (all_l1 + all_box),
           "face_alpha": alpha["face"][inner].mean(), "mouth_alpha": alpha["mouth"][inner].mean(),
           "face_alpha_lips": alpha["face"][lips].mean() if lips.any() else np.nan,
           "face_gaussians_inside": counts["face"][0], "face_opaque_inside": counts["face"][1],
           "mouth_gaussians_inside": counts["mouth"][0], "mouth_opaque_inside": counts["mouth"][1],
           "psnr": M.masked_psnr(image, real, inner),
           "sharpness": M.gradient_energy(image, inner) / M.gradient_energy(real, inner),
           "bright_px_real": M.teeth_share(real, inner), "bright_px_ours": M.teeth_share(image, inner)}
    crop = None
    if held_out:
        ys, xs = np.nonzero(box)
        cut = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        crop = np.concatenate([real[cut], image[cut], np.repeat(alpha["face"][cut][..., None], 3, -1)], 1)
    return row, crop


@torch.no_grad()
def shut_lips_alpha(av):
    """Face-layer alpha over the lips on the 10 most shut training frames: a face layer that fades
    over the whole mouth in every frame (no per-frame opacity) shows it here, on frames with no opening."""
    data, rec, size = av.subject, av.recipe, av.subject.size
    tr = data.train_frames
    values = []
    for t in map(int, tr[np.argsort(data.lip_open[tr])[:10]]):
        lips = data.labels(t).numpy() == LIPS
        g = rec._deformed("face", rec.training_conditions(t, None))
        alpha = rasterize(*g.values(), data.w2c[t], data.K, size, size, with_depth=False).alpha[..., 0].numpy()
        values.append(alpha[lips].mean())
    return float(np.mean(values))


@torch.no_grad()
def response(av):
    """Mouth-box change between the conditions of the 8 most open and 8 most shut training frames."""
    data, rec = av.subject, av.recipe
    tr = data.train_frames
    opens, shut = tr[np.argsort(-data.lip_open[tr])[:8]], tr[np.argsort(data.lip_open[tr])[:8]]
    ours, real = [], []
    for to, ts in zip(map(int, opens), map(int, shut)):
        box = mouth_box(data.labels(to))
        a = av.render(to, rec.training_conditions(to, None))["image"].numpy()
        b = av.render(to, rec.training_conditions(ts, None))["image"].numpy()
        ours.append(np.abs(a - b)[box].mean())
        real.append(np.abs(data.image(to).numpy() - data.image(ts).numpy())[box].mean())
    return float(np.mean(ours)), float(np.mean(real))


def main():
    av = load_avatar(sys.argv[1], run=sys.argv[2])
    data = av.subject
    print(f"Gaussians: {({k: len(s) for k, s in av.recipe.sets.items()})}")
    crops = []
    for name, frames, held_out in (("training", data.train_frames, False), ("held-out", data.val_frames, True)):
        rows = []
        for t in frames[np.argsort(-data.lip_open[frames])[:10]]:
            row, crop = frame_figures(av, int(t), held_out)
            if row is not None:
                rows.append(row)
                crops += [crop] if crop is not None and len(crops) < 5 else []
        print(f"\n{name}: {len(rows)} most open frames (mean lip opening {np.mean(data.lip_open[frames][np.argsort(-data.lip_open[frames])[:10]]):.1f} mm)")
        for key in rows[0]:
            print(f"  {key:24s} {np.mean([r[key] for r in rows]):9.3f}")
    print(f"\nface-layer alpha over the lips (label map), 10 most shut training frames: {shut_lips_alpha(av):.3f}")
    ours, real = response(av)
    print(f"\nmouth-box change, open vs shut conditions (same camera): ours {ours:.4f}, real frames {real:.4f}")
    if len(sys.argv) > 3 and crops:
        import cv2

        h, w = max(c.shape[0] for c in crops), max(c.shape[1] for c in crops)
        sheet = np.concatenate([np.pad(c, ((0, h - c.shape[0]), (0, w - c.shape[1]), (0, 0))) for c in crops], 0)
        sheet = cv2.resize((sheet.clip(0, 1) * 255).astype(np.uint8), None, fx=4, fy=4, interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(sys.argv[3], cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))


if __name__ == "__main__":
    main()
