"""Silence the C++ logging of MediaPipe (and TensorFlow Lite inside it) while its graphs run.

Their absl/glog lines ("INFO: Created TensorFlow Lite XNNPACK delegate", "W0000 ...
inference_feedback_manager.cc:114] ...") are written by native threads straight to file descriptor 2:
they bypass ``sys.stderr``, ignore ``GLOG_minloglevel`` in mediapipe 0.10.21, and so leaked through
``--quiet``. Only redirecting the descriptor itself keeps them out.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at the null device for the duration of the block.

    Python-level errors are unaffected: an exception raised inside propagates and is printed after
    the descriptor is restored. Writes of other threads to stderr during the block are lost, so keep
    the block around native calls only (graph creation, ``process``, ``close``).
    """
    with contextlib.suppress(AttributeError, ValueError, OSError):
        sys.stderr.flush()          # what Python already buffered belongs before the block
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
