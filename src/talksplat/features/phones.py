"""Phone posteriors from pocketsphinx phone-loop decoding (its wheel ships the en-us models).

pocketsphinx's Python API gives segments (phone label, start/end in 10 ms frames), not per-frame
posteriors, so the "posterior" of a frame is a soft histogram: the fraction of the frame's time
covered by each phone, blurred over neighbouring 10 ms steps so that boundaries (which the decoder
places only to +-10-20 ms) are soft. Rows sum to 1; unrecognised noise labels count as silence.
"""

from __future__ import annotations

import os

import numpy as np
from scipy.ndimage import gaussian_filter1d

from talksplat.core.constants import FPS
from talksplat.errors import TalksplatError

# The 39 CMU phones of the en-us model plus silence: the 40 columns of the posteriors, in order.
PHONES = ("SIL", "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G",
          "HH", "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH",
          "UH", "UW", "V", "W", "Y", "Z", "ZH")
NUM_PHONES = len(PHONES)
PHONE_INDEX = {p: i for i, p in enumerate(PHONES)}
SILENCE = PHONE_INDEX["SIL"]

DECODER_RATE = 100          # pocketsphinx frames per second (10 ms), the same grid as our mel steps
BOUNDARY_BLUR_STEPS = 1.5   # Gaussian sigma, in 10 ms steps, that softens phone boundaries
# Phone-loop decoder settings (language weight, phone insertion penalty, beams) that gave
# plausible phone rates (~10-14 phones/s) on read speech in the synthetic-subject trials.
DECODER_OPTIONS = {"lw": 2.0, "pip": 0.3, "beam": 1e-10, "pbeam": 1e-10}


def decode_phone_segments(samples: np.ndarray) -> list[tuple[int, int, int]]:
    """Phone-loop decode 16 kHz mono ``samples`` (N,).

    Returns:
        [(phone column, first 10 ms step, last 10 ms step inclusive), ...]
    """
    try:
        from pocketsphinx import Decoder, get_model_path
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise TalksplatError("pocketsphinx is not installed; run: pip install pocketsphinx==5.1.1") from exc
    model = os.path.join(get_model_path(), "en-us")
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    try:
        decoder = Decoder(hmm=os.path.join(model, "en-us"), allphone=os.path.join(model, "en-us-phone.lm.bin"),
                          loglevel="FATAL", **DECODER_OPTIONS)
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        segments = list(decoder.seg())
    except RuntimeError as exc:
        raise TalksplatError(f"pocketsphinx failed to decode the audio ({exc}); "
                             "check it is speech, or use the 'mel' feature only") from exc
    return [(PHONE_INDEX.get(s.word, SILENCE), int(s.start_frame), int(s.end_frame)) for s in segments]


def segments_to_steps(segments: list[tuple[int, int, int]], first_step: int, num_steps: int) -> np.ndarray:
    """Soft one-hot phone rows for 10 ms steps ``first_step ..`` (silence where nothing decoded).

    Returns:
        (num_steps, 40) float32, rows summing to 1.
    """
    onehot = np.zeros((num_steps, NUM_PHONES), np.float32)
    covered = np.zeros(num_steps, bool)
    for phone, start, end in segments:
        lo, hi = max(start - first_step, 0), min(end + 1 - first_step, num_steps)
        if hi > lo:
            onehot[lo:hi, phone] = 1.0
            covered[lo:hi] = True
    onehot[~covered, SILENCE] = 1.0
    soft = gaussian_filter1d(onehot, BOUNDARY_BLUR_STEPS, axis=0, mode="nearest")
    return (soft / soft.sum(axis=1, keepdims=True)).astype(np.float32)


def phone_step_posteriors(samples: np.ndarray, first_step: int, num_steps: int) -> np.ndarray:
    """Soft phone histograms of 10 ms steps (the log-mel grid), (num_steps, 40) float32."""
    return segments_to_steps(decode_phone_segments(samples), first_step, num_steps)


def phone_posteriors(samples: np.ndarray, n_frames: int) -> np.ndarray:
    """Per video frame (25 fps), the soft histogram of phones over the frame's 40 ms.

    Args:
        samples: (N,) float32 16 kHz mono, N = n_frames * 640 (fit with ``fit_to_frames``).
    Returns:
        (n_frames, 40) float32, rows summing to 1, columns in :data:`PHONES` order.
    """
    steps_per_frame = DECODER_RATE // FPS
    steps = phone_step_posteriors(samples, 0, n_frames * steps_per_frame)
    return steps.reshape(n_frames, steps_per_frame, NUM_PHONES).mean(axis=1)
