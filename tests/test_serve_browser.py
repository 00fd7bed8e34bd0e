"""End to end in a real browser: Debian's headless Chromium, driven by Playwright's Python API, opens
the page with ?avatar=...&sample=1&autoplay=1; the <video> must play for at least 3 s with the mouth
region changing, and the WebRTC stream must carry audio. A screenshot is kept with the test output.
Skipped (with the reason) where Chromium or Playwright is not installed: `.ci/run` installs both."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("TALKSPLAT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    # WebRTC between two processes on this machine: loopback candidates, plain addresses (no mDNS).
    "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
]
PLAY_SECONDS = 3.0                 # the acceptance criterion: the video advances at least this much
PLAYBACK_TIMEOUT_S = 90.0
POLL_S = 0.25
# Where the mouth is in the frame of the synthetic subject's crop (fractions of the height/width).
MOUTH_ROWS = (0.55, 0.85)
MOUTH_COLS = (0.30, 0.70)

MOUTH_PIXELS_JS = """([rows, cols]) => {
  const video = document.getElementById('avatar');
  const canvas = document.createElement('canvas');
  canvas.width = video.videoWidth; canvas.height = video.videoHeight;
  const context = canvas.getContext('2d');
  context.drawImage(video, 0, 0);
  const x = Math.floor(cols[0] * canvas.width), y = Math.floor(rows[0] * canvas.height);
  const w = Math.floor((cols[1] - cols[0]) * canvas.width), h = Math.floor((rows[1] - rows[0]) * canvas.height);
  return Array.from(context.getImageData(x, y, w, h).data);
}"""

# The remote audio through Web Audio: the loudest sample heard, polled while the sample plays.
AUDIO_METER_JS = """() => {
  const stream = document.getElementById('avatar').srcObject;
  const context = new AudioContext();
  const analyser = context.createAnalyser();
  analyser.fftSize = 2048;
  context.createMediaStreamSource(stream).connect(analyser);
  const silent = context.createGain();
  silent.gain.value = 0;
  analyser.connect(silent).connect(context.destination);   // pulled in real time, heard by nobody
  const buffer = new Float32Array(analyser.fftSize);
  window.audioPeak = 0;
  setInterval(() => {
    analyser.getFloatTimeDomainData(buffer);
    for (const v of buffer) window.audioPeak = Math.max(window.audioPeak, Math.abs(v));
  }, 20);
  return context.state;
}"""
AUDIO_PEAK_MIN = 0.02              # speech, not the encoder's noise floor

AUDIO_STATS_JS = """async () => {
  const pc = window.talksplat.pc;
  const report = await pc.getStats();
  let audio = null;
  report.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'audio') audio = s; });
  const tracks = document.getElementById('avatar').srcObject.getAudioTracks();
  return { tracks: tracks.length, live: tracks.length ? tracks[0].readyState : null,
           bytes: audio ? audio.bytesReceived : 0, energy: audio ? (audio.totalAudioEnergy || 0) : 0,
           samples: audio ? (audio.totalSamplesReceived || 0) : 0, peak: window.audioPeak };
}"""


@pytest.fixture()
def server(tiny_demo):
    """The server on a thread of its own (its own event loop), on a free loopback port."""
    import asyncio
    import threading

    from aiohttp import web

    from talksplat.recipes import load_avatar
    from talksplat.serve.app import avatar_names, make_app

    app = make_app(avatar_names([load_avatar(tiny_demo / "work" / "subject")]), loopback=True)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


@pytest.fixture()
def sync_api():
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium); the browser test needs one")
    return pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")


def test_page_autoplays_a_sample_with_moving_mouth_and_audio(sync_api, server, tmp_path: Path, record_property):

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page()
            console: list[str] = []
            page.on("console", lambda message: console.append(message.text))
            page.goto(f"{server}/?avatar=subject&sample=1&autoplay=1")
            page.wait_for_function("document.getElementById('avatar').currentTime > 0",
                                   timeout=PLAYBACK_TIMEOUT_S * 1000)
            page.click("#unmute")                     # the page's own button: sound on
            page.evaluate(AUDIO_METER_JS)
            start = page.evaluate("document.getElementById('avatar').currentTime")
            mouths = []
            deadline = time.monotonic() + PLAYBACK_TIMEOUT_S
            while time.monotonic() < deadline:
                mouths.append(tuple(page.evaluate(MOUTH_PIXELS_JS, [MOUTH_ROWS, MOUTH_COLS])))
                played = page.evaluate("document.getElementById('avatar').currentTime") - start
                if played >= PLAY_SECONDS:
                    break
                time.sleep(POLL_S)
            audio = page.evaluate(AUDIO_STATS_JS)
            shot = tmp_path / "serve_page.png"
            page.screenshot(path=str(shot))
            record_property("screenshot", str(shot))
            print(f"screenshot: {shot}")
            errors = page.evaluate("window.talksplat.errors")
        finally:
            browser.close()

    assert played >= PLAY_SECONDS, (played, console[-10:])
    assert len(set(mouths)) >= 3, "the mouth region did not change while the sample played"
    assert audio["tracks"] == 1 and audio["live"] == "live", audio
    assert audio["bytes"] > 0 and audio["samples"] > 0, audio
    assert audio["peak"] > AUDIO_PEAK_MIN, f"the audio track carried only silence: {audio}"
    assert not errors, errors
    assert shot.stat().st_size > 0
