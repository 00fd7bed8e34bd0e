"""The API's OpenAPI 3 description (served at /openapi.json), written by hand: the API is small."""

from __future__ import annotations

from talksplat import __version__
from talksplat.serve import inputs
from talksplat.serve.limits import ServeLimits

_ERROR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_OK = {"description": "ok", "content": {"application/json": {"schema": {"type": "object"}}}}
_SID = [{"name": "sid", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}]


def _json(properties: dict, required: list[str] | None = None) -> dict:
    schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return {"required": bool(required), "content": {"application/json": {"schema": schema}}}


def _op(summary: str, body: dict | None = None, sid: bool = True, ok: dict | None = None,
        errors: tuple[int, ...] = (400, 404)) -> dict:
    op: dict = {"summary": summary, "responses": {"200": ok or _OK, **{str(c): _ERROR for c in errors}}}
    if sid:
        op["parameters"] = _SID
    if body is not None:
        op["requestBody"] = body
    return op


def openapi_spec(limits: ServeLimits) -> dict:
    audio_types = {t: {"schema": {"type": "string", "format": "binary"}} for t in sorted(inputs.FILE_TYPES)}
    audio_types["audio/L16"] = {"schema": {"type": "string", "format": "binary"}}
    paths = {
        "/api/info": {"get": _op("avatars, bundled samples, whether text-to-speech works, limits", sid=False, errors=())},
        "/api/stats": {"get": _op("server memory, CPU time and every session's counters", sid=False, errors=())},
        "/api/sessions": {"post": {**_op("create a session (201); 429 when the server is full", _json(
            {"avatar": {"type": "string"}, "probe": {"type": "boolean", "description": "stamp frames for the sync probe"}}),
            sid=False, errors=(400, 404, 429)), "responses": {"201": _OK, "404": _ERROR, "429": _ERROR}}},
        "/api/sessions/{sid}": {"get": _op("the session's counters and latencies"),
                                "delete": _op("close the session")},
        "/api/sessions/{sid}/offer": {"post": _op("WebRTC: the browser's SDP offer -> the server's answer", _json(
            {"sdp": {"type": "string"}, "type": {"type": "string", "enum": ["offer"]}}, ["sdp", "type"]))},
        "/api/sessions/{sid}/audio": {"post": _op(
            f"speak an audio file (at most {limits.max_upload_bytes} bytes, {limits.max_upload_seconds:.0f} s) "
            "or a streamed chunk (audio/L16;rate=16000, little-endian)",
            {"required": True, "content": audio_types}, errors=(400, 404, 413, 415))},
        "/api/sessions/{sid}/speak": {"post": _op(f"speak text with espeak-ng (at most {limits.max_text_chars} "
                                                  "characters; 501 without espeak-ng)",
                                                  _json({"text": {"type": "string"}}, ["text"]),
                                                  errors=(400, 404, 413, 501))},
        "/api/sessions/{sid}/sample": {"post": _op("speak bundled sample NUMBER (1-based)",
                                                   _json({"number": {"type": "integer", "minimum": 1}}))},
        "/api/sessions/{sid}/probe": {"post": _op("queue the A/V sync probe (tone bursts on frame boundaries)",
                                                  _json({"bursts": {"type": "integer", "minimum": 1, "maximum": 120}}))},
        "/api/sessions/{sid}/interrupt": {"post": _op("drop the queued speech")},
        "/api/sessions/{sid}/speaking": {"get": _op("whether the avatar is speaking or has speech queued")},
        "/api/sessions/{sid}/record": {"post": _op("start or stop recording what is sent", _json(
            {"action": {"type": "string", "enum": ["start", "stop"]}}, ["action"]))},
        "/api/sessions/{sid}/recording": {"get": _op("the finished recording (video/mp4)", ok={
            "description": "MP4", "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}}},
            errors=(404, 409))},
    }
    return {"openapi": "3.0.3",
            "info": {"title": "talksplat serve", "version": __version__,
                     "description": "A live talking-head avatar over WebRTC (docs/serve.md)."},
            "paths": paths,
            "components": {"schemas": {"Error": {"type": "object", "required": ["error", "status"], "properties": {
                "error": {"type": "string"}, "status": {"type": "integer"}}}}}}
