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
import threading
import time
from collections.abc import Iterator

# The first ``process`` of a MediaPipe graph starts its inference calculators, and a native thread logs
# from them ("W0000 ... inference_feedback_manager.cc:114] ...") a few milliseconds *after* the call
# has returned. So the first call keeps the descriptor redirected until the native side has been
# quiet this long (at most SETTLE_MAX_S), swallowing those late lines.
SETTLE_QUIET_S = 0.1
SETTLE_MAX_S = 2.0


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


class _Drain(threading.Thread):
    """Reads and discards a pipe until it closes, noting when data last arrived."""

    def __init__(self, fd: int) -> None:
        super().__init__(daemon=True)
        self.fd = fd
        self.last = time.monotonic()

    def run(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.last = time.monotonic()


@contextlib.contextmanager
def native_stderr_settled(quiet_s: float = SETTLE_QUIET_S, max_s: float = SETTLE_MAX_S) -> Iterator[None]:
    """As :func:`native_stderr_silenced`, and after the block keeps descriptor 2 redirected until the
    native side has written nothing for ``quiet_s`` (at most ``max_s``): for calls whose native
    threads log after the call returns (a graph's first ``process``)."""
    with contextlib.suppress(AttributeError, ValueError, OSError):
        sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    drain = _Drain(read_end)
    drain.start()
    try:
        os.dup2(write_end, 2)
        yield
        deadline = time.monotonic() + max_s
        drain.last = max(drain.last, time.monotonic())
        while time.monotonic() < deadline and time.monotonic() - drain.last < quiet_s:
            time.sleep(quiet_s / 4)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(write_end)       # descriptor 2 no longer refers to the pipe: the drain sees its end
        drain.join(timeout=max_s)
        with contextlib.suppress(OSError):
            os.close(read_end)
