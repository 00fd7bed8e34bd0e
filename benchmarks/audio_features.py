"""Speed of the offline default audio features: ``mel`` + ``phones`` for 60 s of speech.

    .venv/bin/python benchmarks/audio_features.py [--threads 2]

Writes benchmarks/results/audio_features.json (median of 3 runs, decoding included).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from talksplat.features.audio import (
    fit_to_frames,
    load_audio_16k,
    mel_windows,
    num_frames_for_samples,
)
from talksplat.features.phones import phone_posteriors
from talksplat.features.registry import AudioFeatures
from talksplat.io.audio import save_wav
from talksplat.synthetic import bundled_clips

ASSETS = Path(__file__).resolve().parents[1] / "src" / "talksplat" / "assets" / "audio"
SECONDS = 60
RUNS = 3


def sixty_seconds_of_speech(tmp: Path) -> Path:
    speech = np.concatenate([load_audio_16k(ASSETS / str(c["file"])) for c in bundled_clips()])
    samples = np.resize(speech, SECONDS * 16_000)      # bundled clips, looped to 60 s
    return save_wav(tmp / "speech60.wav", samples)


def timed(fn) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tmp = Path("/tmp/talksplat_bench_audio")
    tmp.mkdir(parents=True, exist_ok=True)
    path = sixty_seconds_of_speech(tmp)
    samples = load_audio_16k(path)
    n = num_frames_for_samples(samples.size)
    fitted = fit_to_frames(samples, n)
    results = {
        "audio_seconds": SECONDS, "frames": n, "threads": args.threads, "python": platform.python_version(),
        "decode_s": timed(lambda: load_audio_16k(path)),
        "mel_s": timed(lambda: mel_windows(fitted, n)),
        "phones_s": timed(lambda: phone_posteriors(fitted, n)),
        "mel_plus_phones_from_file_s": timed(lambda: (AudioFeatures("mel").compute(path),
                                                      AudioFeatures("phones").compute(path))),
    }
    results["real_time_factor"] = results["mel_plus_phones_from_file_s"] / SECONDS
    for key, value in results.items():
        print(f"{key:>30}: {value:.3f}" if isinstance(value, float) else f"{key:>30}: {value}")
    out = Path(__file__).parent / "results" / "audio_features.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print("wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
