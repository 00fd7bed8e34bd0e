"""Timing shared by every module that pairs audio with video frames.

The dataset frame rate and the audio sample rate are fixed across talksplat: audio features,
offset estimation, prepared subjects, rendering and evaluation all assume that video frame ``t``
covers audio samples ``[SAMPLES_PER_FRAME * t, SAMPLES_PER_FRAME * (t + 1))``.
"""

FPS = 25                                   # video frames per second of prepared data and renders
SAMPLE_RATE = 16_000                       # Hz, mono: what every audio feature and model expects
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS     # 640 audio samples per video frame
# ``--device`` of train, render and serve (engine.device); the CLI lists them without importing torch.
DEVICE_CHOICES = ("auto", "cpu", "cuda")
# Until the CUDA path has run on a GPU (no session has had one yet), runs stay on the CPU unless asked.
DEFAULT_DEVICE = "cpu"
