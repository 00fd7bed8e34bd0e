"""Rendering trained avatars for new audio (``Renderer``, ``render_video``, streaming, seam statistic)."""

from talksplat.render.renderer import (
    MAX_AUDIO_SECONDS,
    Renderer,
    RenderOptions,
    output_frame_count,
    render_video,
)
from talksplat.render.seam import SeamMeter, seam_gradient
from talksplat.render.stream import RenderStream

__all__ = ["MAX_AUDIO_SECONDS", "RenderOptions", "RenderStream", "Renderer", "SeamMeter", "output_frame_count",
           "render_video", "seam_gradient"]
