"""A synthetic speaking subject with exact ground truth (camera, head pose, mouth, blinks, masks).

Generates a photoreal-looking talking head from one public-domain photo (scikit-image's
``astronaut``, NASA) lifted onto a 3D mesh, driven by speech (bundled LibriSpeech clips or any
audio file), fully offline and deterministic for a seed. See docs/synthetic.md.

    from talksplat.synthetic import SynthConfig, generate
    result = generate(SynthConfig.tiny(seed=0), "out/")
"""

from talksplat.synthetic.config import SynthConfig
from talksplat.synthetic.generate import SynthResult, bundled_clips, generate, load_ground_truth

__all__ = ["SynthConfig", "SynthResult", "bundled_clips", "generate", "load_ground_truth"]
