"""The bottom layer: meanings shared by every other layer, defined once (frame and sample rate,
mask labels, MediaPipe landmark index sets). No imports from the rest of talksplat."""
