"""``report.md`` of ``talksplat eval`` from its metrics dictionary (every substitute metric labelled)."""

from __future__ import annotations

import itertools


def _f(x, digits: int = 2, unit: str = "") -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x}{unit}"
    return f"{x:.{digits}f}{unit}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _image_section(m: dict) -> list[str]:
    img = m["image"]
    lines = ["## Image quality", ""]
    if "not_applicable" in img:
        return lines + [f"Not applicable: {img['not_applicable']}.", ""]
    rows = []
    for region, name in (("full", "full frame"), ("head", "head crop (bounding box of the head labels)")):
        r = img.get(region)
        if not r:
            rows.append([name, "n/a", "n/a", "n/a", "n/a"])
            continue
        lpips = _f(r["lpips"], 4) if r["lpips"] is not None else "not computed"
        scales = r["ms_ssim_scales"]
        scales = f"{scales}" if r["ms_ssim_scales_max"] == scales else f"{scales}-{r['ms_ssim_scales_max']}"
        rows.append([name, _f(r["psnr"]), _f(r["ssim"], 4), f"{_f(r['ms_ssim'], 4)} ({scales} scales)", lpips])
    fr = m["frames"]
    lines += [(f"{fr['evaluated']} held-out frames ({fr['first']}..{fr['last']}, never trained on), rendered with "
              f"their own camera, audio, expression and backdrop at {fr['size']}x{fr['size']}."), ""]
    lines += _table(["region", "PSNR (dB)", "SSIM", "MS-SSIM", "LPIPS"], rows)
    lines += ["",
              (f"- PSNR: identical images count as {img['psnr_cap_db']:g} dB (cap); {img['psnr_capped_frames']} "
              "frame(s) hit the cap. The full frame is flattered by the exact backdrop (torso and background "
              "come from the real frame); the head crop is the honest figure."),
              "- SSIM: Gaussian window 11, sigma 1.5, valid positions, mean over RGB (the paper convention).",
              ("- MS-SSIM: 5 scales with the standard weights; smaller images use fewer scales (weights "
              "renormalised), so a figure with fewer than 5 scales is not the papers' 5-scale MS-SSIM."),
              f"- LPIPS: {img['lpips']}.", ""]
    return lines


def _motion_section(m: dict) -> list[str]:
    mo = m["motion"]
    lines = ["## Motion", ""]
    if "not_applicable" in mo:
        return lines + [f"Not applicable: {mo['not_applicable']}.", ""]
    tr = mo["frames_tracked"]
    ex = mo["expression_error"]
    res = mo["landmark_size"]
    rows = [
        ["LMD, all 478 landmarks", _f(mo["lmd_all_px"], 2, " px"), f"pixels of a {res}x{res} crop"],
        ["LMD, 40 lip landmarks", _f(mo["lmd_mouth_px"], 2, " px"), f"pixels of a {res}x{res} crop"],
        ["expression error, 7 core coefficients", _f(ex["mean"], 3),
         "mean absolute error in [0, 1]: AUE analogue, not OpenFace AUs"],
        ["lip-opening correlation with ground truth", _f(mo["lip_opening"]["correlation"], 3),
         "Pearson r over frames; inner-lip gap / eye-corner distance"],
        ["lip-opening mean absolute error", _f(mo["lip_opening"]["mae_iod"], 4), "in eye-corner distances"],
    ]
    lines += _table(["metric", "value", "note"], rows)
    per = ", ".join(f"{k} {_f(v, 3)} (raw {_f(ex['raw_per_coefficient'][k], 4)})"
                    for k, v in ex["per_coefficient"].items())
    lines += ["",
              (f"- Landmarks: MediaPipe FaceMesh on render and ground truth, both resized to {res}x{res} (face: "
              f"{_f(mo['inter_ocular_px'], 1)} px between the outer eye corners); found in {tr['ours']} / "
              f"{tr['truth']} of {tr['of']} frames (render / truth); LMD over the {tr['both']} frames with both, "
              "no alignment (same camera and pose). The render is tracked as composited over a fixed backdrop "
              "(the first training frame's torso and neck), not the frame's own: the real jaw line in a frame's "
              "own backdrop would otherwise show the tracker the real mouth opening."),
              (f"- {ex['label']}. Raw measurements ({ex['raw_unit']}) mapped to [0, 1] with the subject's "
              "own normalisation (fitted on its whole prepared clip, shifted by the median difference between "
              "this tracking and prepare's on the same frames). A coefficient that barely moves in the clip "
              f"has a small span, which magnifies its error. Per coefficient: {per}."), ""]
    return lines


def _sync_section(m: dict) -> list[str]:
    sy = m["sync"]
    ref_name = "ground truth (same frames)" if m["mode"] == "self" else "real training video (reference)"
    o, r = sy["ours"], sy["reference"]

    def reliable(x: dict) -> str:
        return "yes" if x["reliable"] else f"no ({x['reason']})" if x["reason"] else "no"

    rows = [
        ["A/V offset (frames; > 0 = audio lags)", _f(o["offset_frames"]), _f(r["offset_frames"])],
        ["A/V confidence (peak margin)", _f(o["confidence"], 3), _f(r["confidence"], 3)],
        ["reliable", reliable(o), reliable(r)],
        ["mouth opening vs audio envelope, r (lag 0)", _f(o["envelope_correlation"], 3),
         _f(r["envelope_correlation"], 3)],
        ["best lag of that correlation (frames), r", (f"{o['envelope_best_lag_frames']}, "
         f"{_f(o['envelope_best_lag_correlation'], 3)}"), (f"{r['envelope_best_lag_frames']}, "
         f"{_f(r['envelope_best_lag_correlation'], 3)}")],
        ["frames", _f(o["frames"]), _f(r["frames"])],
    ]
    lines = ["## Lip sync", "", (f"Offset and confidence: {sy['label']}. A render in sync measures close to the "
             "real video's own offset; the scorer needs >= 10 s to call a result reliable."), ""]
    lines += _table(["figure", "ours", ref_name], rows)
    lines += ["", ("Offset score profile (held-out variance explained per shift; the peak and its width matter, "
                   "not only the argmax):"), ""]
    lines += _profile_table(o.get("scores") or [], r.get("scores") or [], ref_name)
    return lines + ["", ("- Envelope: RMS loudness of each frame's own 40 ms of audio (dBFS); opening: inner-lip "
                        "gap / eye-corner distance. Loudness is a weak proxy for sync (it misplaced real clips by "
                        "~10 frames); prefer the offset."), ""]


PROFILE_SHIFTS = range(-6, 7)   # the shifts shown in the report (metrics.json has all 31)


def _profile_table(ours: list, reference: list, ref_name: str) -> list[str]:
    """Per-shift scores around 0 of ours and the reference (31 scores = shifts -15..+15)."""
    def row(scores: list) -> list[str]:
        if len(scores) != 31:
            return ["n/a"] * len(PROFILE_SHIFTS)
        return [_f(scores[k + 15], 3) for k in PROFILE_SHIFTS]

    return _table(["shift (frames)"] + [f"{k:+d}" for k in PROFILE_SHIFTS],
                  [["ours"] + row(ours), [ref_name] + row(reference)])


def _stability_section(m: dict) -> list[str]:
    st = m["stability"]
    lines = ["## Stability (GaussianFlameTalk Sec. 3.3)", ""]
    if "not_computed" in st:
        return lines + [f"Not computed: {st['not_computed']}.", ""]
    ref_name = "ground truth" if m["mode"] == "self" else "real training video"
    rows = []
    for key, name in (("ours", "ours"), ("reference", ref_name)):
        s = st[key]
        rows.append([name, _f(s["score"], 3), _f(s["normalised"]["M_d"], 3), _f(s["normalised"]["V_m"], 3),
                     _f(s["normalised"]["H_f"], 3), _f(s["raw"]["M_d"], 3), _f(s["raw"]["V_m"], 3),
                     _f(s["raw"]["H_f"], 4), _f(s["frames"])])
    lines += _table(["video", "score", "M_d", "V_m", "H_f", "raw M_d (px/frame)", "raw V_m (px/frame)",
                     "raw H_f (px^2)", "frames"], rows)
    return lines + ["", (f"- {st['label']}. Nose landmarks {tuple(st['landmarks'])} (bridge to tip: not moved by "
                        "the jaw), mean position per frame, pixels of the landmark crop."),
                    ("- M_d: mean |v(t+1) - v(t)| of the frame-to-frame motion v; V_m: mean standard deviation "
                    f"of |v| over {st['variability_window']} frames; H_f: mean power above {st['cutoff_hz']:g} Hz "
                    f"in {st['fft_window']}-frame windows. See docs/eval.md."), ""]


def _eyes_section(m: dict) -> list[str]:
    ey = m.get("eyes")
    if not ey:
        return []
    ref_name = "ground truth (same frames)" if m["mode"] == "self" else "real training video (reference)"
    o, r = ey["ours"], ey["reference"]
    rows = [["blinks per minute", _f(o["blinks_per_minute"], 1), _f(r["blinks_per_minute"], 1)],
            ["blinks", _f(o["blinks"]), _f(r["blinks"])],
            ["EAR median", _f(o["ear_median"], 3), _f(r["ear_median"], 3)],
            ["EAR 5th percentile", _f(o["ear_p5"], 3), _f(r["ear_p5"], 3)],
            ["EAR minimum", _f(o["ear_min"], 3), _f(r["ear_min"], 3)],
            ["seconds (frames with a face)", f"{_f(o['seconds'], 1)} ({o['frames_with_face']})",
             f"{_f(r['seconds'], 1)} ({r['frames_with_face']})"]]
    same = ey.get("reference_replayed")
    if same:
        rows.insert(2, ["blinks per minute of the reference over the replayed source frames", "",
                        f"{_f(same['blinks_per_minute'], 1)} ({same['blinks']} blinks)"])
    lines = ["## Eyes", "", f"{ey['label']}.", ""] + _table(["figure", "ours", ref_name], rows)
    if "psnr_eye_region" in ey:
        lines += ["", (f"- Eye-region PSNR: {_f(ey['psnr_eye_region'])} dB over {ey['psnr_eye_region_frames']} "
                       "frames (two boxes around the ground truth's eye contours, 1.3 x 0.7 eye widths: both lids, "
                       "open or shut).")]
    lines += [("- Blink rates over a few seconds are noisy (one blink in 3 s is 20 per minute); compare them "
               "over the longer cross-driven renders too."), ""]
    return lines


def _mouth_section(m: dict) -> list[str]:
    mi = m.get("mouth_interior")
    if not mi:
        return []
    lines = ["## Mouth interior", "", f"{mi['label']}.", ""]
    rows = [["gradient energy, ours", _f(mi["gradient_energy_ours"], 5)],
            [f"gradient energy, {mi['reference']}", _f(mi["gradient_energy_reference"], 5)],
            ["sharpness ratio (ours / reference; 1 = as much detail)", _f(mi["sharpness_ratio"], 3)]]
    if mi.get("psnr") is not None:
        rows.insert(0, ["PSNR inside the inner lips (dB)", _f(mi["psnr"])])
        rows.append(["frames with an open mouth", _f(mi["frames"])])
    else:
        rows.append(["frames with an open mouth (ours, reference)", f"{mi['frames_ours']}, {mi['frames_reference']}"])
    return lines + _table(["figure", "value"], rows) + [""] + _teeth_lines(mi.get("teeth_by_opening"))


def _teeth_lines(teeth: dict | None) -> list[str]:
    """The teeth table: bright share inside the inner lips, binned by mouth opening."""
    if not teeth or not teeth.get("bins"):
        return []
    paired = "ours_on_reference_frames" in teeth["bins"][0]
    header = ["mouth opening (reference percentiles)", "reference", "ours at its own opening"]
    header += ["ours on the reference's frames"] if paired else []
    names = [f"below p{teeth['percentiles'][0]:g}"]
    names += [f"p{a:g}-p{b:g}" for a, b in itertools.pairwise(teeth["percentiles"])]
    names += [f"above p{teeth['percentiles'][-1]:g}"]
    rows = []
    for name, row in zip(names, teeth["bins"], strict=True):
        cells = [name, f"{_f(row['reference'], 2)} ({row['reference_frames']})",
                 f"{_f(row['ours_at_own_opening'], 2)} ({row['ours_frames']})"]
        rows.append(cells + ([_f(row["ours_on_reference_frames"], 2)] if paired else []))
    return [(f"Teeth: the share of inner-lip pixels brighter than luma {teeth['luma_threshold']:g}, by mouth "
             "opening (frames in brackets). 'At its own opening' asks whether the render shows teeth when it "
             "opens as wide; 'on the reference's frames' also needs it to open when the real mouth does."),
            ""] + _table(header, rows) + [""]


def _efficiency_section(m: dict) -> list[str]:
    ef = m["efficiency"]
    train = (f"{_f(ef['train_seconds'], 1)} s (latest checkpoint, step {ef['checkpoint_step']})"
             if ef.get("train_seconds") is not None else "unknown (no checkpoint progress)")
    rows = [["training wall time", train]]
    if ef.get("iterations") is not None:
        rows.append(["training iterations", (f"{ef['iterations']} ({_f(ef.get('ms_per_iteration_median'), 1)} "
                                            f"ms/iteration median, {ef.get('train_threads')} threads)")])
    rows.append(["rendering", (f"{_f(ef['render_fps'], 1)} frames/s over {ef['render_frames']} frames at "
                              f"{ef['render_size']}x{ef['render_size']} ({ef['render_threads']} threads; "
                              f"median {_f(ef['render_ms_per_frame_median'], 1)} ms/frame)")])
    return ["## Efficiency", ""] + _table(["figure", "value"], rows) + [
        "", ("- Rendering time covers the model (audio code, deformation, rasterization, compositing), not "
            "tracking or metrics; the first frame's warm-up is included."), ""]


def render_report(m: dict) -> str:
    """Markdown report of a metrics dictionary from :func:`talksplat.eval.runner.evaluate_subject`."""
    if m["mode"] == "self":
        title = "self-reconstruction of the held-out frames"
    else:
        title = f"driven by {m['audio']}"
    lines = [f"# talksplat eval: {title}", "",
             f"Subject `{m['subject']}`, run `{m['run']}` ({m['recipe']}).", ""]
    lines += _image_section(m) + _motion_section(m) + _eyes_section(m) + _mouth_section(m) + _sync_section(m)
    lines += _stability_section(m)
    lines += _efficiency_section(m)
    captions = {"per_frame_psnr.png": "per-frame PSNR", "mouth_vs_envelope.png": "mouth opening vs audio envelope",
                "nose_spectra.png": "nose trajectory spectra"}
    lines += ["## Plots", ""] + [f"![{captions.get(p, p)}]({p})" for p in m.get("plots", [])] + [""]
    return "\n".join(lines)
