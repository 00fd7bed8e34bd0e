"""talksplat serve: the HTTP API, live WebRTC sessions (a Python viewer stands in for the browser), the
abuse corpus (the server answers 4xx JSON and keeps serving), and the pieces under them (the audio
timeline, the sync-probe stamps)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import socket
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("aiortc")

from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from talksplat.core.constants import SAMPLE_RATE, SAMPLES_PER_FRAME
from talksplat.errors import TalksplatError
from talksplat.serve import probe
from talksplat.serve.inputs import wav_bytes
from talksplat.serve.limits import ServeLimits
from talksplat.serve.timeline import AudioTimeline

SMALL_UPLOAD = 256 * 1024           # tests tighten the upload limit to exercise it cheaply
FRAMES_TO_CONNECT = 10              # frames a viewer must receive before a test goes on
CONNECT_TIMEOUT_S = 60.0            # generous: the CI machine may be busy (no timing is asserted)


def _speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t) ** 2
    return (0.3 * envelope * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def avatars(tiny_demo):
    from talksplat.recipes import load_avatar
    from talksplat.serve.app import avatar_names

    return avatar_names([load_avatar(tiny_demo / "work" / "subject")])


@contextlib.asynccontextmanager
async def serving(avatars, **limits):
    from talksplat.serve.app import STATE, make_app

    app = make_app(avatars, ServeLimits(**limits), loopback=True)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with ClientSession() as http:
            yield http, str(server.make_url("")).rstrip("/"), app[STATE]
    finally:
        await server.close()


def run(coro):
    return asyncio.run(coro)


async def _json(response) -> dict:
    assert response.content_type == "application/json", (response.status, await response.text())
    return await response.json()


async def _create(http, base, **body) -> dict:
    async with http.post(f"{base}/api/sessions", json=body) as r:
        data = await _json(r)
        assert r.status == 201, data
        return data


# ------------------------------------------------------------------------------------------ pure parts
def test_timeline_lays_speech_then_silence_and_respects_its_limits():
    timeline = AudioTimeline(max_queued_seconds=1.0, keep_samples=SAMPLES_PER_FRAME)
    silence = timeline.take_until(1000)
    assert silence.shape == (1000,) and not silence.any() and not timeline.speaking(0)
    speech = np.full(1500, 0.5, np.float32)
    utterance = timeline.enqueue(speech, arrived=0.0)
    assert timeline.speaking(0) and timeline.queued_samples == 1500
    laid = timeline.take_until(3000)
    assert utterance.start == 1000 and np.all(laid[:1500] == 0.5) and not laid[1500:].any()
    assert timeline.speaking(2499) and not timeline.speaking(2500)
    assert np.array_equal(timeline.read(900, 1100), np.r_[np.zeros(100), np.full(100, 0.5)].astype(np.float32))
    timeline.forget_before(3000)
    assert not timeline.read(0, 100).any()          # forgotten samples read as silence, never garbage
    with pytest.raises(TalksplatError, match="limit"):
        timeline.enqueue(np.zeros(SAMPLE_RATE + 1, np.float32), arrived=0.0)
    timeline.enqueue(np.ones(800, np.float32), arrived=0.0)
    assert timeline.interrupt() == 800 and not timeline.take_until(4000).any()


def test_timeline_aligns_the_probe_to_a_frame_and_cushions_live_audio():
    timeline = AudioTimeline(max_queued_seconds=10.0, keep_samples=10_000)
    timeline.take_until(1000)
    timeline.enqueue(probe.probe_signal(2), arrived=0.0, align=True, markers=tuple(probe.burst_onsets(0, 2)))
    timeline.take_until(40_000)
    assert list(timeline.probe_onsets) == [1280, 1280 + SAMPLE_RATE]        # the next frame boundary
    assert timeline.probe_onset_in(2) and not timeline.probe_onset_in(1)
    live = AudioTimeline(max_queued_seconds=10.0, keep_samples=0)
    utterance = live.enqueue(np.ones(100, np.float32), arrived=0.0, lead_silence=960)
    live.take_until(2000)
    assert utterance.start == 960


def test_probe_stamp_round_trips():
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    for index, onset in ((0, False), (1234, True), (4095, False)):
        assert probe.read_stamp(probe.stamp(image, index, onset)) == (index, onset)


# ------------------------------------------------------------------------------------------ API
def test_page_static_files_info_and_openapi(avatars):
    async def go():
        async with serving(avatars) as (http, base, _):
            async with http.get(f"{base}/") as r:
                assert r.status == 200 and "<video" in await r.text()
            async with http.get(f"{base}/static/app.js") as r:
                assert r.status == 200 and "RTCPeerConnection" in await r.text()
            for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py", "/etc/passwd"):
                async with http.get(f"{base}{path}") as r:
                    assert r.status in (403, 404), path
                    assert "import" not in await r.text()
            async with http.get(f"{base}/api/info") as r:
                info = await _json(r)
            assert [a["name"] for a in info["avatars"]] == list(avatars)
            assert len(info["samples"]) >= 1 and info["limits"]["max_sessions"] == 4
            async with http.get(f"{base}/openapi.json") as r:
                spec = await _json(r)
            assert spec["openapi"].startswith("3.") and "/api/sessions/{sid}/offer" in spec["paths"]
    run(go())


def test_live_session_speaks_records_interrupts_and_closes(avatars):
    from talksplat.serve.client import Viewer

    async def go():
        async with serving(avatars) as (http, base, state):
            created = await _create(http, base)
            sid = created["id"]
            assert created["latency_ms"] == pytest.approx(227.5)
            viewer = Viewer()
            await viewer.connect(http, base, sid)
            assert await viewer.wait_for_frames(FRAMES_TO_CONNECT, CONNECT_TIMEOUT_S)
            idle_frames = [f.copy() for f in viewer.last_images]
            assert viewer.audio_peak < 1e-3           # silence while idle
            assert len(idle_frames) >= 2 and max(                          # idle motion, not a frozen frame
                np.abs(a.astype(int) - b.astype(int)).max() for a, b in itertools.pairwise(idle_frames)) > 0

            async with http.post(f"{base}/api/sessions/{sid}/record", json={"action": "start"}) as r:
                assert r.status == 200, await r.text()
            async with http.post(f"{base}/api/sessions/{sid}/audio", data=wav_bytes(_speechlike(2.0)),
                                 headers={"Content-Type": "audio/wav"}) as r:
                queued = await _json(r)
                assert r.status == 200 and queued["seconds"] == pytest.approx(2.0, abs=0.01)
            async with http.get(f"{base}/api/sessions/{sid}/speaking") as r:
                assert (await _json(r))["speaking"] is True
            seen = viewer.video_frames
            assert await viewer.wait_for_frames(seen + 40, CONNECT_TIMEOUT_S)
            assert viewer.audio_peak > 0.05            # the speech reached the viewer as sound
            async with http.post(f"{base}/api/sessions/{sid}/record", json={"action": "stop"}) as r:
                stopped = await _json(r)
                assert r.status == 200 and stopped["frames"] > 0
            async with http.get(f"{base}{stopped['url']}") as r:
                assert r.status == 200 and r.content_type == "video/mp4"
                mp4 = await r.read()

            async with http.post(f"{base}/api/sessions/{sid}/sample", json={"number": 2}) as r:
                assert r.status == 200 and (await _json(r))["sample"]["licence"].startswith("CC BY")
            async with http.post(f"{base}/api/sessions/{sid}/interrupt") as r:
                assert (await _json(r))["dropped_seconds"] > 1.0
            async with http.get(f"{base}/api/sessions/{sid}") as r:
                status = await _json(r)
            assert status["queued_seconds"] == 0 and status["frames_rendered"] > 0
            assert len(status["first_frame_latency_ms"]) >= 1
            await viewer.close()
            async with http.delete(f"{base}/api/sessions/{sid}") as r:
                assert r.status in (200, 404)            # closing the peer may already have closed it
            async with http.get(f"{base}/api/sessions/{sid}") as r:
                assert r.status == 404
            assert not state.sessions
            return mp4

    mp4 = run(go())
    import av

    with av.open(io.BytesIO(mp4)) as container:
        assert container.streams.video and container.streams.audio
        frames = sum(1 for _ in container.decode(video=0))
    assert frames > 0


def test_text_to_speech_or_a_clear_refusal(avatars):
    from talksplat.serve import inputs

    async def go():
        async with serving(avatars) as (http, base, _):
            sid = (await _create(http, base))["id"]
            async with http.post(f"{base}/api/sessions/{sid}/speak", json={"text": "Hello there."}) as r:
                return r.status, await _json(r)

    status, body = run(go())
    if inputs.tts_available():
        assert status == 200 and body["seconds"] > 0.3
    else:
        assert status == 501 and "espeak-ng" in body["error"]


# ------------------------------------------------------------------------------------------ abuse
def test_abuse_corpus_gets_4xx_json_and_the_server_keeps_serving(avatars):
    async def go():
        async with serving(avatars, max_upload_bytes=SMALL_UPLOAD) as (http, base, state):
            sid = (await _create(http, base))["id"]
            s = f"{base}/api/sessions/{sid}"
            cases = [
                ("oversized upload", "POST", f"{s}/audio", {"data": b"\0" * (SMALL_UPLOAD + 1),
                                                             "headers": {"Content-Type": "audio/wav"}}, 413),
                ("wrong content type", "POST", f"{s}/audio", {"data": b"hello", "headers": {"Content-Type": "text/plain"}}, 415),
                ("no content type", "POST", f"{s}/audio", {"data": b"RIFF"}, 415),
                ("garbage audio", "POST", f"{s}/audio", {"data": np.random.default_rng(1).bytes(5000),
                                                         "headers": {"Content-Type": "audio/wav"}}, 400),
                ("silent audio", "POST", f"{s}/audio", {"data": wav_bytes(np.zeros(SAMPLE_RATE, np.float32)),
                                                        "headers": {"Content-Type": "audio/wav"}}, 400),
                ("empty body", "POST", f"{s}/audio", {"data": b"", "headers": {"Content-Type": "audio/wav"}}, 400),
                ("odd PCM", "POST", f"{s}/audio", {"data": b"\0\0\0", "headers": {"Content-Type": "audio/L16;rate=16000"}}, 400),
                ("PCM at 44.1 kHz", "POST", f"{s}/audio", {"data": b"\0\0", "headers": {"Content-Type": "audio/L16;rate=44100"}}, 400),
                ("unknown avatar", "POST", f"{base}/api/sessions", {"json": {"avatar": "nobody"}}, 404),
                ("avatar not a string", "POST", f"{base}/api/sessions", {"json": {"avatar": ["x"]}}, 404),
                ("JSON not an object", "POST", f"{base}/api/sessions", {"json": [1, 2]}, 400),
                ("invalid JSON", "POST", f"{base}/api/sessions", {"data": b"{", "headers": {"Content-Type": "application/json"}}, 400),
                ("form instead of JSON", "POST", f"{base}/api/sessions", {"data": {"avatar": "x"}}, 415),
                ("unknown session", "GET", f"{base}/api/sessions/{'0' * 32}", {}, 404),
                ("bad SDP", "POST", f"{s}/offer", {"json": {"sdp": "v=0 nonsense", "type": "offer"}}, 400),
                ("answer instead of offer", "POST", f"{s}/offer", {"json": {"sdp": "v=0", "type": "answer"}}, 400),
                ("sample 0", "POST", f"{s}/sample", {"json": {"number": 0}}, 400),
                ("sample as path", "POST", f"{s}/sample", {"json": {"number": "../../etc/passwd"}}, 400),
                ("text too long", "POST", f"{s}/speak", {"json": {"text": "a" * 5000}}, 413),
                ("empty text", "POST", f"{s}/speak", {"json": {"text": " "}}, 400),
                ("record nonsense", "POST", f"{s}/record", {"json": {"action": "rm -rf"}}, 400),
                ("stop without start", "POST", f"{s}/record", {"json": {"action": "stop"}}, 400),
                ("no recording yet", "GET", f"{s}/recording", {}, 404),
                ("unknown route", "GET", f"{base}/api/nothing", {}, 404),
                ("wrong method", "PUT", f"{base}/api/sessions", {}, 405),
            ]
            for path_like in ("../../etc/passwd", "/etc/passwd", "subject/../../x", "~root", "C:\\Windows", "%2e%2e"):
                cases.append((f"avatar {path_like}", "POST", f"{base}/api/sessions", {"json": {"avatar": path_like}}, 404))
            for path_like in ("..", "..%2F..%2Fetc%2Fpasswd", "%2e%2e", "a" * 300):
                cases.append((f"session {path_like[:20]}", "GET", f"{base}/api/sessions/{path_like}", {}, 404))
            for name, method, url, kwargs, expected in cases:
                async with http.request(method, url, **kwargs) as r:
                    text = await r.text()
                    assert r.status == expected, (name, r.status, text[:300])
                    if r.content_type == "application/json":
                        body = await r.json()
                        assert body["status"] == expected and body["error"], name
                        assert str(state.work_dir) not in body["error"], name   # no server paths leak
                    else:
                        assert r.status in (404, 405), (name, r.content_type)
            async with http.post(f"{s}/audio", data=wav_bytes(_speechlike(0.5)),
                                 headers={"Content-Type": "audio/wav"}) as r:
                assert r.status == 200, await r.text()          # still serving, same session
            assert list(state.work_dir.iterdir()) == []         # no upload left on disk
    run(go())


def test_100_rapid_session_creations(avatars):
    async def go():
        async with serving(avatars) as (http, base, state):
            async def create():
                async with http.post(f"{base}/api/sessions", json={}) as r:
                    return r.status, await _json(r)

            results = await asyncio.gather(*(create() for _ in range(100)))
            created = [body["id"] for status, body in results if status == 201]
            refused = [body for status, body in results if status == 429]
            assert len(created) == state.limits.max_sessions and len(refused) == 100 - len(created)
            assert "limit" in refused[0]["error"]
            for sid in created:
                async with http.delete(f"{base}/api/sessions/{sid}") as r:
                    assert r.status == 200
            for _ in range(100):      # create and close in a row: no slot is leaked
                sid = (await _create(http, base))["id"]
                async with http.delete(f"{base}/api/sessions/{sid}") as r:
                    assert r.status == 200
            assert not state.sessions
            async with http.get(f"{base}/api/info") as r:
                assert r.status == 200
    run(go())


def test_clients_that_disconnect_mid_stream_do_not_disturb_others(avatars):
    from talksplat.serve.client import Viewer

    async def go():
        async with serving(avatars) as (http, base, state):
            keeper, leaver = Viewer(), Viewer()
            kept = (await _create(http, base))["id"]
            left = (await _create(http, base))["id"]
            await keeper.connect(http, base, kept)
            await leaver.connect(http, base, left)
            assert await keeper.wait_for_frames(FRAMES_TO_CONNECT, CONNECT_TIMEOUT_S)
            assert await leaver.wait_for_frames(FRAMES_TO_CONNECT, CONNECT_TIMEOUT_S)
            for sid in (kept, left):
                async with http.post(f"{base}/api/sessions/{sid}/audio", data=wav_bytes(_speechlike(3.0)),
                                     headers={"Content-Type": "audio/wav"}) as r:
                    assert r.status == 200
            await leaver.close()           # hangs up mid-speech without closing its session
            _abandoned_upload(base, left)   # and an upload that stops half-way
            before = keeper.video_frames
            assert await keeper.wait_for_frames(before + 25, CONNECT_TIMEOUT_S)
            for _ in range(100):
                if left not in state.sessions:
                    break
                await asyncio.sleep(0.1)
            assert left not in state.sessions and kept in state.sessions   # the slot was freed
            async with http.get(f"{base}/api/sessions/{kept}") as r:
                assert (await _json(r))["frames_rendered"] > 0
            await keeper.close()
    run(go())


def test_microphone_audio_is_spoken_back(avatars):
    from talksplat.serve.client import ToneTrack, Viewer

    async def go():
        async with serving(avatars) as (http, base, _):
            sid = (await _create(http, base))["id"]
            viewer = Viewer()
            await viewer.connect(http, base, sid, microphone=ToneTrack.make())
            assert await viewer.wait_for_frames(FRAMES_TO_CONNECT + 25, CONNECT_TIMEOUT_S)
            async with http.get(f"{base}/api/sessions/{sid}") as r:
                status = await _json(r)
            await viewer.close()
            return status, viewer.audio_peak

    status, peak = run(go())
    assert status["speaking"] is True           # the tone is streamed speech
    assert peak > 0.05                          # and comes back as the avatar's audio


def _abandoned_upload(base: str, sid: str) -> None:
    """Declares a 100 kB upload, sends 1 kB, and hangs up."""
    host, port = base.split("//")[1].split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall((f"POST /api/sessions/{sid}/audio HTTP/1.1\r\nHost: {host}\r\n"
                      "Content-Type: audio/wav\r\nContent-Length: 100000\r\n\r\n").encode() + b"\0" * 1000)


def test_serve_cli_refuses_bad_arguments(tmp_path: Path):
    from talksplat.cli.main import main

    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert main(["serve", str(tmp_path), "--port", "0"]) == 2
