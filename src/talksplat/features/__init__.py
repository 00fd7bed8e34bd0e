"""Per-frame conditioning features: audio (log-mel, phone posteriors, pretrained encoders, the
audio-visual sync encoder) and expression. Import the submodules directly, e.g.
``from talksplat.features.registry import AudioFeatures``; see docs/audio.md."""
