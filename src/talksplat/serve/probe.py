"""The A/V sync probe: tone bursts in the audio, each starting on a frame boundary, and every video
frame stamped with its index and whether a burst starts in it (a row of black/white blocks in the
top-left corner that survives VP8). The browser (or a test) decodes the stamps, detects the bursts'
onsets, and compares when each was presented."""

from __future__ import annotations

import numpy as np

from talksplat.core.constants import SAMPLE_RATE

INDEX_BITS = 12              # frame indices modulo 4096 (2.7 minutes at 25 fps)
STAMP_BLOCKS = INDEX_BITS + 1  # + one block: "a burst starts in this frame"
BLOCKS_ACROSS = 16           # block side = frame width / this (16 px at 256^2)
TONE_HZ = 1000.0
TONE_AMPLITUDE = 0.5
BURST_SECONDS = 0.1
BURST_PERIOD_SECONDS = 1.0


def block_side(width: int) -> int:
    return max(width // BLOCKS_ACROSS, 1)


def stamp(image: np.ndarray, index: int, onset: bool) -> np.ndarray:
    """A copy of ``image`` with the stamp: block b (b < INDEX_BITS) white when bit b of ``index`` is set,
    the last block white when ``onset``."""
    out = image.copy()
    side = block_side(image.shape[1])
    bits = [(index >> b) & 1 for b in range(INDEX_BITS)] + [int(onset)]
    for b, bit in enumerate(bits):
        out[:side, b * side:(b + 1) * side] = 255 if bit else 0
    return out


def read_stamp(image: np.ndarray) -> tuple[int, bool]:
    """(index, onset) from a stamped (possibly compressed) frame."""
    side = block_side(image.shape[1])
    margin = max(side // 4, 0)
    bits = []
    for b in range(STAMP_BLOCKS):
        block = image[margin:side - margin, b * side + margin:(b + 1) * side - margin]
        bits.append(int(block.mean() > 127))
    index = sum(bit << b for b, bit in enumerate(bits[:INDEX_BITS]))
    return index, bool(bits[-1])


def probe_signal(bursts: int) -> np.ndarray:
    """``bursts`` tone bursts, one every BURST_PERIOD_SECONDS (the first at sample 0), 16 kHz float32.
    Each burst's period is a whole number of frames, so with the first on a frame boundary all are."""
    period = int(BURST_PERIOD_SECONDS * SAMPLE_RATE)
    length = int(BURST_SECONDS * SAMPLE_RATE)
    t = np.arange(length) / SAMPLE_RATE
    burst = (TONE_AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)
    out = np.zeros(period * bursts, np.float32)
    for k in range(bursts):
        out[k * period:k * period + length] = burst
    return out


def burst_onsets(start: int, bursts: int) -> list[int]:
    """Timeline positions of the bursts of a probe laid at ``start``."""
    period = int(BURST_PERIOD_SECONDS * SAMPLE_RATE)
    return [start + k * period for k in range(bursts)]
