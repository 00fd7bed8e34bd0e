"""One clip prepared at two sizes, compared step by step as the trainer sees them (issue #20):
landmarks / EAR, expression coefficients, frames, masks, intrinsics, cameras.

    .venv/bin/python benchmarks/fidelity_prepare_compare.py SUBJECT_256 SUBJECT_512
"""
import sys, numpy as np, cv2
from talksplat.eval import signals as S, metrics as M
a, b = sys.argv[1], sys.argv[2]
la, lb = np.load(f"{a}/landmarks.npy"), np.load(f"{b}/landmarks.npy")
sa, sb = la.shape, lb.shape
fa = np.load(f"{a}/frames.npy", mmap_mode="r"); fb = np.load(f"{b}/frames.npy", mmap_mode="r")
ratio = fb.shape[1] / fa.shape[1]
print(f"frames {fa.shape} vs {fb.shape}")
print("landmarks: max |(a+0.5)*r-0.5 - b| = %.3f px (at b's size)" % np.abs((la + 0.5) * ratio - 0.5 - lb)[..., :2].max())
ea, eb = S.eye_aspect_ratio(la), S.eye_aspect_ratio(lb)
print("EAR on prepare landmarks: a", {k: round(v, 3) for k, v in M.blink_statistics(ea).items() if k.startswith(("ear", "blinks"))},
      "\n                          b", {k: round(v, 3) for k, v in M.blink_statistics(eb).items() if k.startswith(("ear", "blinks"))})
xa, xb = np.load(f"{a}/expressions.npz"), np.load(f"{b}/expressions.npz")
print("expressions core max diff %.2e, blink max diff %.2e" % (np.abs(xa["core"] - xb["core"]).max(), np.abs(xa["blink"] - xb["blink"]).max()))
ma, mb = np.load(f"{a}/masks.npy", mmap_mode="r"), np.load(f"{b}/masks.npy", mmap_mode="r")
n = fa.shape[0]; size = fa.shape[1]
ps, md, eyes = [], [], []
for t in range(0, n, 25):
    x = fa[t].astype(float)
    y = cv2.resize(np.ascontiguousarray(fb[t]), (size, size), interpolation=cv2.INTER_AREA).astype(float)
    ps.append(10 * np.log10(255 ** 2 / np.mean((x - y) ** 2)))
    mm = cv2.resize(np.ascontiguousarray(mb[t]), (size, size), interpolation=cv2.INTER_NEAREST)
    md.append((mm != ma[t]).mean())
    box = M.eye_region_mask(la[t], (size, size))
    eyes.append(10 * np.log10(255 ** 2 / np.mean((x[box] - y[box]) ** 2)))
print("frames at training size: PSNR a vs b->%d mean %.1f dB (min %.1f), eye region %.1f dB" % (size, np.mean(ps), np.min(ps), np.mean(eyes)))
print("masks: %.2f%% of pixels differ (nearest-resized)" % (100 * np.mean(md)))
ca, cb = np.load(f"{a}/cameras.npz"), np.load(f"{b}/cameras.npz")
print("K a", ca["K"][0, 0].round(2), ca["K"][0, 2].round(2), " K b / ratio", (cb["K"][0, 0] / ratio).round(2), ((cb["K"][0, 2] + 0.5) / ratio - 0.5).round(2))
d = ca["euler_deg"] - cb["euler_deg"]; dt = ca["w2c"][:, :3, 3] - cb["w2c"][:, :3, 3]
print("cameras: rotation diff std (deg)", d.std(0).round(3), "translation diff std (mm)", dt.std(0).round(3))
for name, c, r in (("a", ca, 1), ("b", cb, ratio)):
    print(f"  {name}: landmark reprojection error median {np.median(c['landmark_error_px']) / r:.2f} px (a's pixels), "
          f"frame-to-frame rotation jitter median {np.median(np.abs(np.diff(c['euler_deg'], axis=0))):.3f} deg")
