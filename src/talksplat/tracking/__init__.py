"""Face tracking: landmark detection on images and video frames."""

from talksplat.core.landmarks import (
    INNER_LIPS,
    LEFT_EYE,
    LEFT_IRIS_CENTER,
    NUM_LANDMARKS,
    OUTER_LIPS,
    RIGHT_EYE,
    RIGHT_IRIS_CENTER,
)
from talksplat.tracking.facemesh import FaceMeshTracker, detection_rate, track_frames

__all__ = [
    "INNER_LIPS",
    "LEFT_EYE",
    "LEFT_IRIS_CENTER",
    "NUM_LANDMARKS",
    "OUTER_LIPS",
    "RIGHT_EYE",
    "RIGHT_IRIS_CENTER",
    "FaceMeshTracker",
    "detection_rate",
    "track_frames",
]
