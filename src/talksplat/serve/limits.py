"""What one ``talksplat serve`` process allows, and its timing. Every figure is named here (and listed
in docs/serve.md); the server reads them from a :class:`ServeLimits` so tests can tighten them."""

from __future__ import annotations

from dataclasses import asdict, dataclass

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8010

# Sessions: each one renders 25 frames a second; two cores hold about one and a half at 256^2
# (docs/serve.md), so more than four only share the same cores more thinly.
MAX_SESSIONS = 4
# A session nobody connected media to (no WebRTC offer) is closed after this long.
CONNECT_TIMEOUT_S = 30.0

# Uploads: 20 MB holds two minutes of 16-bit 48 kHz stereo WAV; longer speech should be streamed.
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_UPLOAD_SECONDS = 120.0
# Audio waiting to be spoken, per session (float32 at 16 kHz: 7.7 MB at this limit).
MAX_QUEUED_SECONDS = 180.0
MAX_TEXT_CHARS = 1000
TTS_TIMEOUT_S = 30.0
# Recordings stop by themselves at this length (x264 at 256^2: a few MB per minute).
MAX_RECORD_SECONDS = 300.0

# Timing. A frame is rendered at least this long before it is due (one frame's compute at 256^2 is
# ~35 ms on two idle cores); speech that arrives is placed right after the audio already committed to
# frames rendered so far, so the lead adds directly to the first-frame latency.
RENDER_LEAD_S = 0.060
# On a busy machine (or with several sessions on the one render thread) frames take longer from being
# started to being ready; the lead grows to that time (plus a margin), up to this much.
MAX_RENDER_LEAD_S = 0.200
RENDER_LEAD_MARGIN_S = 0.010
# A frame may be sent one slot late (A/V off by one frame for that frame); one that would be later is
# skipped (the previous frame is shown again), so an overloaded server drops frames instead of
# drifting away from the audio.
LATE_TOLERANCE_S = 0.040
# Streamed (microphone, audio/L16) speech starts this much after it arrives, absorbing network jitter.
LIVE_JITTER_S = 0.060


@dataclass(frozen=True)
class ServeLimits:
    max_sessions: int = MAX_SESSIONS
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_upload_seconds: float = MAX_UPLOAD_SECONDS
    max_queued_seconds: float = MAX_QUEUED_SECONDS
    max_text_chars: int = MAX_TEXT_CHARS
    tts_timeout_s: float = TTS_TIMEOUT_S
    max_record_seconds: float = MAX_RECORD_SECONDS
    render_lead_s: float = RENDER_LEAD_S
    max_render_lead_s: float = MAX_RENDER_LEAD_S
    late_tolerance_s: float = LATE_TOLERANCE_S
    live_jitter_s: float = LIVE_JITTER_S

    def as_dict(self) -> dict:
        return asdict(self)
