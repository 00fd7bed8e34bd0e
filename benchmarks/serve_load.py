"""Load on `talksplat serve`: 1, 2, 4 concurrent WebRTC sessions streaming speech for 60 s each, plus
the A/V sync measured in headless Chromium with the sync probe.

    .venv/bin/python benchmarks/serve_load.py SUBJECT [--sessions 1 2 4] [--seconds 60] [--sync]

The server runs as its own process (`talksplat serve SUBJECT`); this process plays every viewer with
aiortc (it receives and decodes both tracks, as a browser would) on the same machine, and every
UTTERANCE_PERIOD_S sends each session a fresh stretch of bundled speech (so each session measures a
first-frame latency per utterance). Per session count: frames delivered per second (fresh frames the
server sent, and frames the viewer received), dropped frames (a slot that repeated the previous frame),
first-frame latency p50/p95 (an utterance's arrival at the server -> the frame that plays its first
sample handed to WebRTC), server RSS sampled every second, server and viewer CPU.
Writes benchmarks/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
UTTERANCE_PERIOD_S = 6.0       # a new utterance this often per session ...
UTTERANCE_SECONDS = 4.5        # ... this long, so each one starts from silence
CONNECT_TIMEOUT_S = 60.0
SAMPLE_PERIOD_S = 1.0
SERVER_START_TIMEOUT_S = 180.0
SYNC_BURSTS = 40              # one a second
SYNC_SETTLED_AFTER = 20       # the browser's own A/V alignment converges over the first seconds
SYNC_TIMEOUT_S = 60.0
SYNC_TAIL_S = 3.0             # the last burst's latency
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--autoplay-policy=no-user-gesture-required", "--allow-loopback-in-peer-connection",
                  "--disable-features=WebRtcHideLocalIpsWithMdns"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def speech(seconds: float) -> np.ndarray:
    from talksplat.core.constants import SAMPLE_RATE
    from talksplat.io.audio import load_audio
    from talksplat.synthetic import bundled_clips

    clip = np.concatenate([load_audio(c["path"], SAMPLE_RATE) for c in bundled_clips()])
    return clip[: int(seconds * SAMPLE_RATE)]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


async def run_load(base: str, server_pid: int, n: int, seconds: float, avatar: str) -> dict:
    import aiohttp

    from talksplat.serve.client import Viewer
    from talksplat.serve.inputs import wav_bytes
    from talksplat.serve.media import restrict_ice_to_loopback

    restrict_ice_to_loopback()
    utterance = wav_bytes(speech(UTTERANCE_SECONDS))
    async with aiohttp.ClientSession() as http:
        sessions, viewers = [], []
        for _ in range(n):
            async with http.post(f"{base}/api/sessions", json={"avatar": avatar}) as r:
                body = await r.json()
                assert r.status == 201, body
                sessions.append(body["id"])
            viewer = Viewer()
            await viewer.connect(http, base, sessions[-1])
            viewers.append(viewer)
        for viewer in viewers:
            assert await viewer.wait_for_frames(10, CONNECT_TIMEOUT_S), "no frames"

        async def status(sid):
            async with http.get(f"{base}/api/sessions/{sid}") as r:
                return await r.json()

        async def server_stats():
            async with http.get(f"{base}/api/stats") as r:
                return await r.json()

        before = [await status(s) for s in sessions]
        received_before = [v.video_frames for v in viewers]
        cpu0, own0, busy0, t0 = cpu_seconds(server_pid), time.process_time(), machine_busy(), time.monotonic()
        rss, next_utterance, next_sample = [], t0, t0
        while (now := time.monotonic()) < t0 + seconds:
            if now >= next_utterance:
                for sid in sessions:
                    async with http.post(f"{base}/api/sessions/{sid}/audio", data=utterance,
                                         headers={"Content-Type": "audio/wav"}) as r:
                        assert r.status == 200, await r.text()
                next_utterance += UTTERANCE_PERIOD_S
            if now >= next_sample:
                rss.append([round(now - t0, 1), (await server_stats())["rss_mb"]])
                next_sample += SAMPLE_PERIOD_S
            await asyncio.sleep(0.05)
        wall = time.monotonic() - t0
        cpu = cpu_seconds(server_pid) - cpu0
        own = time.process_time() - own0
        busy1 = machine_busy()
        after = [await status(s) for s in sessions]
        per_session, latencies = [], []
        for b, a, v, r0 in zip(before, after, viewers, received_before):
            sent = a["slots_sent"] - b["slots_sent"]
            repeated = a["slots_repeated"] - b["slots_repeated"]
            late = a["slots_late_skipped"] - b["slots_late_skipped"]
            one_late = a["slots_one_late"] - b["slots_one_late"]
            new = a["first_frame_latency_ms"]
            lat = new[len(b["first_frame_latency_ms"]):] if len(new) > len(b["first_frame_latency_ms"]) else new
            latencies += lat
            per_session.append({"delivered_fps": round((sent - repeated) / wall, 2),
                                "received_fps": round((v.video_frames - r0) / wall, 2),
                                "dropped_frames": repeated + late, "slots": sent + late,
                                "sent_one_slot_late": one_late,
                                "frames_rendered": a["frames_rendered"] - b["frames_rendered"],
                                "frames_skipped": a["frames_skipped"] - b["frames_skipped"],
                                "render_ms_mean": a["render_ms_mean"], "audio_underruns":
                                    a["audio_underruns"] - b["audio_underruns"],
                                "audio_chunks_skipped": a["audio_chunks_skipped"] - b["audio_chunks_skipped"],
                                "first_frame_latency_ms": lat})
        for viewer in viewers:
            await viewer.close()
        for sid in sessions:
            async with http.delete(f"{base}/api/sessions/{sid}"):
                pass
    machine = (busy1[0] - busy0[0]) / max(busy1[1] - busy0[1], 1) * os.cpu_count()
    return {"sessions": n, "seconds": round(wall, 1), "per_session": per_session,
            "delivered_fps_min": min(s["delivered_fps"] for s in per_session),
            "dropped_frames_total": sum(s["dropped_frames"] for s in per_session),
            "first_frame_latency_ms": {"p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
                                       "count": len(latencies)},
            "server_rss_mb": {"start": rss[0][1], "max": max(r for _, r in rss), "end": rss[-1][1], "series": rss},
            "server_cpu_cores": round(cpu / wall, 2), "viewer_process_cpu_cores": round(own / wall, 2),
            "machine_cpu_cores_busy": round(machine, 2),
            "holds_25_fps": all(s["delivered_fps"] >= 24.5 for s in per_session)}


def measure_sync(base: str, avatar: str) -> dict:
    """Chromium plays the probe: tone bursts on frame boundaries and frames stamped with their index;
    offset = when a burst was heard - when its frame was displayed (positive: audio later)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(f"{base}/?avatar={avatar}&probe=1&autoplay=1&probe_bursts={SYNC_BURSTS}")
            # every burst that was displayed and heard, whatever the browser dropped
            page.wait_for_function("window.talksplat.probe", timeout=SYNC_TIMEOUT_S * 1000)
            page.wait_for_timeout((SYNC_BURSTS + SYNC_TAIL_S) * 1000)
            result = page.evaluate("window.talksplat.probe")
            import urllib.request

            with urllib.request.urlopen(base + "/api/stats", timeout=10) as r:
                server_side = json.load(r)["sessions"]
            page.evaluate("window.talksplat.probe.done = true")
            page.evaluate("stopSession()")          # frees the server's session slot
        finally:
            browser.close()
    video = [v["time"] for v in result["videoOnsets"]]
    # one displayed frame per burst: the first frame flagged after a gap
    firsts = [t for i, t in enumerate(video) if i == 0 or t - video[i - 1] > 500]
    offsets = []
    for v in firsts:
        nearest = min(result["audioOnsets"], key=lambda a: abs(a - v))
        if abs(nearest - v) < 500:
            offsets.append(round(nearest - v, 1))
    frame_ms = 1000 / 25
    return {"bursts": len(offsets), "offsets_ms": offsets, "method": (
                "audio: the remote track read through MediaStreamTrackProcessor, onset = read time - the samples "
                "after the onset in that chunk; video: requestVideoFrameCallback expectedDisplayTime of the first "
                "frame stamped 'burst starts here'; both performance.now() in the page; probe started 5 s after "
                "the first frame"),
            "median_ms": round(float(np.median(offsets)), 1) if offsets else None,
            "within_one_frame": sum(abs(o) <= frame_ms for o in offsets),
            "settled": _summary(offsets[SYNC_SETTLED_AFTER:], frame_ms),
            "mean_ms": round(float(np.mean(offsets)), 1) if offsets else None,
            "min_ms": min(offsets) if offsets else None, "max_ms": max(offsets) if offsets else None,
            "frames_checked": result["frames"], "error": result.get("error"),
            "server_session": {k: server_side[0].get(k) for k in (
                "frames_rendered", "frames_skipped", "slots_sent", "slots_repeated", "slots_one_late",
                "slots_late_skipped", "audio_chunks_skipped", "audio_underruns", "render_ms_mean")} if server_side else None}


def _summary(offsets: list[float], frame_ms: float) -> dict:
    if not offsets:
        return {}
    return {"bursts": len(offsets), "median_ms": round(float(np.median(offsets)), 1),
            "min_ms": min(offsets), "max_ms": max(offsets),
            "within_one_frame": sum(abs(o) <= frame_ms for o in offsets)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("subject", type=Path)
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--sync", action="store_true", help="also measure A/V sync in headless Chromium")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve_load.json")
    args = parser.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # The server's own words, shown if it fails to start; open for the server's whole life.
    server_log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
    load_before = os.getloadavg()
    server = subprocess.Popen([sys.executable, "-m", "talksplat.cli.main", "serve", str(args.subject),
                               "--port", str(port), "--max-sessions", str(max(args.sessions))],
                              stdout=subprocess.DEVNULL, stderr=server_log)
    try:
        import urllib.request

        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(base + "/api/info", timeout=2) as r:
                    avatar = json.load(r)["avatars"][0]
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    server_log.seek(0)
                    said = [line for line in server_log.read().splitlines() if line.strip()]
                    raise SystemExit("the server did not start" + (f": {said[-1]}" if said else "")) from None
                time.sleep(0.5)
        results = {"what": "talksplat serve under load (benchmarks/serve_load.py)", "subject": str(args.subject),
                   "avatar": avatar, "machine": f"{platform.machine()}, {os.cpu_count()} cores; load average "
                   f"{load_before[0]:.2f} before the server started (other jobs: see machine_cpu_cores_busy)",
                   "utterance": {"seconds": UTTERANCE_SECONDS, "every_s": UTTERANCE_PERIOD_S}, "runs": []}
        if args.sync:
            results["sync"] = measure_sync(base, avatar["name"])
            print("sync", json.dumps(results["sync"]), flush=True)
        for n in args.sessions:
            run = asyncio.run(run_load(base, server.pid, n, args.seconds, avatar["name"]))
            summary = {k: v for k, v in run.items() if k not in ("per_session", "server_rss_mb")}
            print(json.dumps(summary), flush=True)
            results["runs"].append(run)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {args.out}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
