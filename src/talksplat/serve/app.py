"""The HTTP side of ``talksplat serve`` (aiohttp): the page, the JSON API, and the session registry.

Every error is JSON ``{"error": message, "status": code}``: 4xx for anything a request got wrong
(never a traceback), 500 only for a server bug (logged). Requests name avatars and sessions only by
the names and ids the server gave out; nothing in a request becomes a file path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from aiohttp import web
from aiohttp.helpers import parse_mimetype

from talksplat.core.constants import FPS, SAMPLE_RATE
from talksplat.engine.avatar import Avatar
from talksplat.errors import TalksplatError
from talksplat.serve import inputs, probe
from talksplat.serve.limits import ServeLimits
from talksplat.serve.openapi import openapi_spec
from talksplat.serve.session import Session, render_pool

log = logging.getLogger("talksplat.serve")

STATIC_DIR = Path(__file__).parent / "static"
SESSION_ID = re.compile(r"^[0-9a-f]{32}$")
SHOWN_NAME_CHARS = 64          # how much of an unknown name an error message repeats
REAPER_PERIOD_S = 5.0
PROBE_BURSTS = 20            # one a second: 20 s of probe
MAX_PROBE_BURSTS = 120
STATE = web.AppKey("state", object)
REAPER = web.AppKey("reaper", object)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ServerState:
    """What the handlers share: the avatars (loaded once), the sessions, the render thread."""

    def __init__(self, avatars: dict[str, Avatar], limits: ServeLimits, loopback: bool) -> None:
        self.avatars = avatars
        self.limits = limits
        self.loopback = loopback
        self.sessions: dict[str, Session] = {}
        self.pool = render_pool()
        self.work_dir = Path(tempfile.mkdtemp(prefix="talksplat-serve-"))
        self.tts = inputs.tts_available()
        self.started = time.monotonic()
        self.sessions_created = 0

    def session(self, request: web.Request) -> Session:
        sid = request.match_info["sid"]
        session = self.sessions.get(sid) if SESSION_ID.match(sid) else None
        if session is None or session.closed:
            raise ApiError(404, f"no session {_shown(sid)}; create one with POST /api/sessions")
        return session

    async def close_session(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        await session.close()
        if session.recording_path is not None:
            with contextlib.suppress(OSError):
                session.recording_path.unlink()

    async def reap(self) -> None:
        """Closes sessions that never connected media in time, and forgets closed ones."""
        while True:
            await asyncio.sleep(REAPER_PERIOD_S)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                unconnected = session.peer is None and now - session.created > self.limits.connect_timeout_s
                if session.closed or unconnected:
                    await self.close_session(session)


def _shown(text: str) -> str:
    return repr(text[:SHOWN_NAME_CHARS] + ("..." if len(text) > SHOWN_NAME_CHARS else ""))


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status)


@web.middleware
async def json_errors(request: web.Request, handler):
    try:
        return await handler(request)
    except ApiError as exc:
        return _error(exc.status, str(exc))
    except TalksplatError as exc:
        return _error(400, str(exc))
    except web.HTTPRequestEntityTooLarge as exc:
        return _error(413, f"request body too large (limit {exc.max_size} bytes)")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason or "error")
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return _error(500, "internal server error (see the server's log)")


async def _json_body(request: web.Request) -> dict:
    if not request.can_read_body:
        return {}
    if request.content_type != "application/json":
        raise ApiError(415, f"send JSON (Content-Type: application/json), not {request.content_type!r}")
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the JSON body must be an object")
    return body


# ------------------------------------------------------------------------------------------ handlers
async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


async def info(request: web.Request) -> web.Response:
    state: ServerState = request.app[STATE]
    avatars = [{"name": name, "size": a.size, "recipe": a.recipe_name, "gaussians": a.num_gaussians()}
               for name, a in state.avatars.items()]
    return web.json_response({"avatars": avatars, "tts": state.tts, "fps": FPS, "sample_rate": SAMPLE_RATE,
                              "samples": _sample_list(), "limits": state.limits.as_dict(),
                              "upload_types": inputs.accepted_types(),
                              "sessions": len(state.sessions)})


def _sample_list() -> list[dict]:
    from talksplat.synthetic import bundled_clips

    return [{"number": i + 1, "reader": c.get("reader"), "seconds": c.get("duration_s")}
            for i, c in enumerate(bundled_clips())]


async def server_stats(request: web.Request) -> web.Response:
    import resource

    state: ServerState = request.app[STATE]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return web.json_response({"rss_mb": round(_rss_mb(), 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
                              "uptime_s": round(time.monotonic() - state.started, 1),
                              "sessions": [s.status() for s in state.sessions.values()],
                              "sessions_created": state.sessions_created})


def _rss_mb() -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def create_session(request: web.Request) -> web.Response:
    state: ServerState = request.app[STATE]
    body = await _json_body(request)
    name = body.get("avatar")
    if name is None and len(state.avatars) == 1:
        name = next(iter(state.avatars))
    if not isinstance(name, str) or name not in state.avatars:
        shown = _shown(name) if isinstance(name, str) else repr(type(name).__name__)
        raise ApiError(404, f"unknown avatar {shown}; this server has {', '.join(state.avatars)}")
    for closed in [s for s in state.sessions.values() if s.closed]:   # hung up since the last sweep
        await state.close_session(closed)
    if len(state.sessions) >= state.limits.max_sessions:
        raise ApiError(429, f"the server already has {len(state.sessions)} sessions (limit "
                            f"{state.limits.max_sessions}); close one (DELETE /api/sessions/ID) or try later")
    sid = uuid.uuid4().hex
    session = Session(sid, name, state.avatars[name], state.limits, state.pool, state.work_dir,
                      probe_stamps=bool(body.get("probe", False)))
    state.sessions[sid] = session
    state.sessions_created += 1
    return web.json_response({"id": sid, "avatar": name, "size": session.size, "fps": FPS,
                              "latency_ms": round(session.latency_samples / SAMPLE_RATE * 1000, 1)}, status=201)


async def delete_session(request: web.Request) -> web.Response:
    state: ServerState = request.app[STATE]
    session = state.session(request)
    await state.close_session(session)
    return web.json_response({"closed": session.id})


async def session_status(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].session(request).status())


async def offer(request: web.Request) -> web.Response:
    from talksplat.serve.media import answer

    state: ServerState = request.app[STATE]
    session = state.session(request)
    body = await _json_body(request)
    sdp, kind = body.get("sdp"), body.get("type")
    if not isinstance(sdp, str) or not isinstance(kind, str):
        raise ApiError(400, "send {\"sdp\": ..., \"type\": \"offer\"} from RTCPeerConnection.createOffer()")
    description = await answer(session, sdp, kind, state.loopback)
    return web.json_response({"sdp": description.sdp, "type": description.type})


async def push_audio(request: web.Request) -> web.Response:
    """An audio file (any FILE_TYPES) or a raw chunk (audio/L16) to speak after what is queued."""
    state: ServerState = request.app[STATE]
    session = state.session(request)
    arrived = time.monotonic()
    content_type = request.content_type.lower()
    if content_type != inputs.PCM_TYPE and content_type not in inputs.FILE_TYPES:
        raise ApiError(415, f"unsupported Content-Type {_shown(content_type)}; send one of "
                            f"{', '.join(inputs.accepted_types())}")
    limit = state.limits.max_upload_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, f"upload of {request.content_length} bytes is over the {limit}-byte limit")
    body = await request.read()
    if not body:
        raise ApiError(400, "the request has no audio in its body")
    if content_type == inputs.PCM_TYPE:
        params = dict(parse_mimetype(request.headers.get("Content-Type", "")).parameters)
        samples = inputs.decode_pcm(body, params)
        live = True
    else:
        loop = asyncio.get_running_loop()
        samples = await loop.run_in_executor(None, inputs.decode_file, body, state.work_dir,
                                             state.limits.max_upload_seconds)
        live = False
    session.enqueue(samples, arrived, live=live)
    return web.json_response(_queued(session, samples))


def _queued(session: Session, samples) -> dict:
    return {"seconds": round(len(samples) / SAMPLE_RATE, 3), "speaking": True,
            "queued_seconds": round(session.timeline.queued_samples / SAMPLE_RATE, 2)}


async def speak(request: web.Request) -> web.Response:
    state: ServerState = request.app[STATE]
    session = state.session(request)
    arrived = time.monotonic()
    body = await _json_body(request)
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "send {\"text\": \"what to say\"}")
    if len(text) > state.limits.max_text_chars:
        raise ApiError(413, f"text of {len(text)} characters is over the {state.limits.max_text_chars}-character limit")
    if not state.tts:
        raise ApiError(501, "text-to-speech needs espeak-ng, which is not installed on this server "
                            "(Debian/Ubuntu: apt-get install espeak-ng)")
    samples = await inputs.synthesize(text, state.limits.tts_timeout_s)
    session.enqueue(samples, arrived)
    return web.json_response(_queued(session, samples))


async def play_sample(request: web.Request) -> web.Response:
    state: ServerState = request.app[STATE]
    session = state.session(request)
    arrived = time.monotonic()
    body = await _json_body(request)
    number = body.get("number", 1)
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        raise ApiError(400, f"sample number must be a whole number from 1 (got {_shown(str(number))})")
    loop = asyncio.get_running_loop()
    samples, clip = await loop.run_in_executor(None, inputs.bundled_sample, number)
    session.enqueue(samples, arrived)
    return web.json_response({**_queued(session, samples), "sample": clip})


async def play_probe(request: web.Request) -> web.Response:
    """Tone bursts for the A/V sync measurement (frames are stamped when the session was made with probe)."""
    session = request.app[STATE].session(request)
    body = await _json_body(request)
    bursts = body.get("bursts", PROBE_BURSTS)
    if not isinstance(bursts, int) or isinstance(bursts, bool) or not 1 <= bursts <= MAX_PROBE_BURSTS:
        raise ApiError(400, f"bursts must be a whole number from 1 to {MAX_PROBE_BURSTS}")
    signal = probe.probe_signal(bursts)
    markers = tuple(probe.burst_onsets(0, bursts))
    session.enqueue(signal, time.monotonic(), markers=markers)
    return web.json_response({**_queued(session, signal), "bursts": bursts})


async def interrupt(request: web.Request) -> web.Response:
    session = request.app[STATE].session(request)
    return web.json_response({"dropped_seconds": round(session.interrupt(), 3)})


async def speaking(request: web.Request) -> web.Response:
    session = request.app[STATE].session(request)
    return web.json_response({"speaking": session.speaking(),
                              "queued_seconds": round(session.timeline.queued_samples / SAMPLE_RATE, 2)})


async def record(request: web.Request) -> web.Response:
    session = request.app[STATE].session(request)
    body = await _json_body(request)
    action = body.get("action")
    if action == "start":
        session.start_recording()
        return web.json_response({"recording": True})
    if action == "stop":
        result = await session.stop_recording()
        return web.json_response({"recording": False, **result,
                                  "url": f"/api/sessions/{session.id}/recording"})
    raise ApiError(400, "send {\"action\": \"start\"} or {\"action\": \"stop\"}")


async def recording(request: web.Request) -> web.StreamResponse:
    session = request.app[STATE].session(request)
    path = session.recording_path
    if session.recorder is not None:
        raise ApiError(409, "still recording; stop the recording first")
    if path is None or not path.is_file():
        raise ApiError(404, "this session has no recording; POST {\"action\": \"start\"} to .../record first")
    return web.FileResponse(path, headers={"Content-Type": "video/mp4",
                                           "Content-Disposition": f'attachment; filename="talksplat-{session.id[:8]}.mp4"'})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_spec(request.app[STATE].limits))


# ------------------------------------------------------------------------------------------ app
def make_app(avatars: dict[str, Avatar], limits: ServeLimits | None = None, loopback: bool = True) -> web.Application:
    """The aiohttp application serving ``avatars`` (name -> loaded Avatar)."""
    if not avatars:
        raise TalksplatError("no avatars to serve")
    limits = limits or ServeLimits()
    for name, avatar in avatars.items():
        _check_streams(name, avatar)
    if loopback:
        from talksplat.serve.media import restrict_ice_to_loopback

        restrict_ice_to_loopback()
    state = ServerState(avatars, limits, loopback)
    app = web.Application(middlewares=[json_errors], client_max_size=limits.max_upload_bytes)
    app[STATE] = state
    r = app.router
    r.add_get("/", index)
    r.add_static("/static/", STATIC_DIR, show_index=False, follow_symlinks=False)
    r.add_get("/openapi.json", openapi)
    r.add_get("/api/info", info)
    r.add_get("/api/stats", server_stats)
    r.add_post("/api/sessions", create_session)
    r.add_get("/api/sessions/{sid}", session_status)
    r.add_delete("/api/sessions/{sid}", delete_session)
    r.add_post("/api/sessions/{sid}/offer", offer)
    r.add_post("/api/sessions/{sid}/audio", push_audio)
    r.add_post("/api/sessions/{sid}/speak", speak)
    r.add_post("/api/sessions/{sid}/sample", play_sample)
    r.add_post("/api/sessions/{sid}/probe", play_probe)
    r.add_post("/api/sessions/{sid}/interrupt", interrupt)
    r.add_get("/api/sessions/{sid}/speaking", speaking)
    r.add_post("/api/sessions/{sid}/record", record)
    r.add_get("/api/sessions/{sid}/recording", recording)
    app.on_startup.append(_start_reaper)
    app.on_shutdown.append(_close_all)
    return app


def _check_streams(name: str, avatar: Avatar) -> None:
    """Refuses, at start-up, an avatar whose audio feature cannot be streamed (docs/render.md)."""
    from talksplat.render.renderer import Renderer

    try:
        Renderer(avatar).stream()
    except TalksplatError as exc:
        raise TalksplatError(f"avatar {name} cannot be served live: {exc}") from None


async def _start_reaper(app: web.Application) -> None:
    app[REAPER] = asyncio.get_running_loop().create_task(app[STATE].reap())


async def _close_all(app: web.Application) -> None:
    state: ServerState = app[STATE]
    app[REAPER].cancel()
    for session in list(state.sessions.values()):
        await state.close_session(session)
    state.pool.shutdown(wait=False, cancel_futures=True)
    shutil.rmtree(state.work_dir, ignore_errors=True)


def avatar_names(avatars: list[Avatar]) -> dict[str, Avatar]:
    """Names for the avatars: their subject folders' names, made unique with -2, -3, ..."""
    named: dict[str, Avatar] = {}
    for avatar in avatars:
        base = avatar.name or "avatar"
        name, k = base, 2
        while name in named:
            name, k = f"{base}-{k}", k + 1
        named[name] = avatar
    return named
