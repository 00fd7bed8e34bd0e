"""The PNG plots of ``talksplat eval`` (matplotlib, Agg backend), each written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from talksplat.io.atomic import atomic_path


def _figure(width: float = 8.0, height: float = 3.2):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(width, height), dpi=110)


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def per_frame_psnr(path: Path, frames: np.ndarray, full: np.ndarray, head: np.ndarray, cap_db: float) -> Path:
    """PSNR of every evaluated frame, full frame and head crop (frames (T,), values (T,) dB)."""
    plt, fig, ax = _figure()
    ax.plot(frames, full, ".-", label="full frame")
    ax.plot(frames, head, ".-", label="head crop")
    if np.nanmax(np.concatenate([full, head])) >= cap_db:
        ax.axhline(cap_db, color="grey", lw=0.8, ls=":", label=f"cap {cap_db:g} dB (identical)")
    ax.set_xlabel("frame")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("per-frame PSNR of the held-out frames")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(plt, fig, path)


def _zscore(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    ok = np.isfinite(x)
    if ok.sum() < 2 or np.nanstd(x) == 0:
        return x - np.nanmean(x) if ok.any() else x
    return (x - np.nanmean(x)) / np.nanstd(x)


def mouth_vs_envelope(path: Path, seconds: np.ndarray, ours: np.ndarray, envelope_db: np.ndarray,
                      reference: np.ndarray | None = None) -> Path:
    """Lip opening (ours, and the ground truth if given) and the audio envelope over time, standardised."""
    plt, fig, ax = _figure(9.0, 3.4)
    ax.plot(seconds, _zscore(envelope_db), color="grey", lw=1.0, label="audio envelope (dB)")
    ax.plot(seconds, _zscore(ours), lw=1.4, label="mouth opening, ours")
    if reference is not None:
        ax.plot(seconds, _zscore(reference), lw=1.2, ls="--", label="mouth opening, ground truth")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("standardised")
    ax.set_title("mouth opening vs audio envelope")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    return _save(plt, fig, path)


def nose_spectra(path: Path, spectra: dict[str, tuple[np.ndarray, np.ndarray]], cutoff_hz: float) -> Path:
    """Power spectra of nose trajectories ({label: (frequencies Hz, power px^2)}), log scale."""
    plt, fig, ax = _figure()
    for label, (freqs, power) in spectra.items():
        ax.semilogy(freqs[1:], np.maximum(power[1:], 1e-12), ".-", label=label)
    ax.axvline(cutoff_hz, color="grey", lw=0.8, ls=":", label=f"high-frequency cutoff {cutoff_hz:g} Hz")
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("power (px$^2$)")
    ax.set_title("nose trajectory spectra")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(plt, fig, path)
