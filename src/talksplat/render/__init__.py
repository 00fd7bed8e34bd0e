"""Rendering trained avatars for new audio (``Renderer``, ``render_video``)."""
