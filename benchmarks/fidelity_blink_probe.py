"""Does an avatar close its eyes when its blink coefficients say so? (issue #20, docs/fidelity.md)

    .venv/bin/python benchmarks/fidelity_blink_probe.py SUBJECT_DIR RUN_DIR SHEET.png

For the 12 training frames with the strongest blinks and the 6 most open ones: EAR tracked on the
render vs the real frame, the eye-region change when both eyeBlink coefficients are forced to 0 and
to 1, eye-region PSNR; SHEET.png shows renders (top) over real frames (bottom) - scratch only, never
commit images of real people."""
import sys, numpy as np, torch
from talksplat.recipes import load_avatar
from talksplat.eval import signals as S, metrics as M
torch.set_num_threads(1)
subject, run = sys.argv[1], sys.argv[2]
av = load_avatar(subject, run=run)
data = av.subject
tr = data.train_frames
blink = data.blink[tr]
shut = tr[np.argsort(-blink)[:12]]
openf = tr[np.argsort(blink)[:6]]
u8 = lambda x: (x.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
rend, real, resp = [], [], []
with torch.no_grad():
    for t in list(shut) + list(openf):
        t = int(t)
        out = av.render_own(t)
        rend.append(u8(out["image"])); real.append(u8(data.image(t)))
        c = av.recipe.conditions(t)
        imgs = []
        for v in (0.0, 1.0):
            cc = dict(c); e = c["expression"].clone(); e[..., :2] = v; cc["expression"] = e
            imgs.append(av.render(t, cc)["image"].numpy())
        mask = M.eye_region_mask(data.landmarks_px(t), imgs[0].shape[:2])
        resp.append(float(np.abs(imgs[1] - imgs[0])[mask].mean()))
ear_r = S.eye_aspect_ratio(np.stack([S.track_landmarks([f], 256)[0] for f in rend]))
ear_t = S.eye_aspect_ratio(np.stack([S.track_landmarks([f], 256)[0] for f in real]))
k = len(shut)
print(f"{subject}: blink coef of shut frames {np.round(data.blink[shut],2)}")
print(" EAR real shut", np.round(ear_t[:k], 3), " render shut", np.round(ear_r[:k], 3))
print(" EAR real open", np.round(ear_t[k:], 3), " render open", np.round(ear_r[k:], 3))
print(" eye-region |render(blink=1)-render(blink=0)| mean (0-1 scale): shut frames %.4f open frames %.4f" % (np.mean(resp[:k]), np.mean(resp[k:])))
print(" eye-region PSNR shut frames %.2f open %.2f" % (np.mean([M.masked_psnr(a, b, M.eye_region_mask(data.landmarks_px(int(t)), a.shape[:2])) for a, b, t in zip(rend[:k], real[:k], shut)]),
      np.mean([M.masked_psnr(a, b, M.eye_region_mask(data.landmarks_px(int(t)), a.shape[:2])) for a, b, t in zip(rend[k:], real[k:], openf)])))
import cv2
sheet = np.concatenate([np.concatenate([r, t], 0) for r, t in zip(rend[:6], real[:6])], 1)
cv2.imwrite(sys.argv[3], cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
