"""talksplat: audio-driven talking-head synthesis with 3D Gaussian Splatting, on a plain CPU."""

__version__ = "0.1.0"
