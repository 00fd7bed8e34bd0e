// talksplat serve: the page. Plain JavaScript, no libraries (nothing is fetched from elsewhere).
"use strict";

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const SPEAKING_POLL_MS = 500;
const ICE_GATHER_TIMEOUT_MS = 3000;
const EXTENSION_TYPES = { wav: "audio/wav", mp3: "audio/mpeg", ogg: "audio/ogg", oga: "audio/ogg", opus: "audio/opus",
  flac: "audio/flac", m4a: "audio/mp4", aac: "audio/aac", webm: "audio/webm", mp4: "video/mp4" };

// Everything a test or a person at the console may want to look at.
const state = window.talksplat = { info: null, sessionId: null, pc: null, micTrack: null, audioSender: null,
  recording: false, errors: [], probe: null };

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
  if (error) state.errors.push(text);
}

async function api(method, path, body, contentType = "application/json") {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.body = contentType === "application/json" ? JSON.stringify(body) : body;
    init.headers["Content-Type"] = contentType;
  }
  const response = await fetch(path, init);
  const type = response.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await response.json() : null;
  if (!response.ok) throw new Error((data && data.error) || `${response.status} ${response.statusText}`);
  return data;
}

async function loadInfo() {
  state.info = await api("GET", "/api/info");
  const select = $("avatar-select");
  for (const avatar of state.info.avatars) {
    select.add(new Option(`${avatar.name} (${avatar.size}², ${avatar.gaussians} Gaussians)`, avatar.name));
  }
  if (params.get("avatar")) select.value = params.get("avatar");
  for (const sample of state.info.samples) {
    $("sample-select").add(new Option(`sample ${sample.number}: ${sample.reader}, ${sample.seconds} s`, sample.number));
  }
  if (!state.info.tts) {
    $("text").disabled = $("speak").disabled = true;
    $("text").placeholder = "Text-to-speech is not available: the server has no espeak-ng (apt-get install espeak-ng).";
  }
  setStatus("ready");
}

function waitForIceGathering(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") { pc.removeEventListener("icegatheringstatechange", done); resolve(); } };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, ICE_GATHER_TIMEOUT_MS);   // send what we have: loopback candidates come at once
  });
}

async function startSession() {
  $("start").disabled = true;
  const avatar = $("avatar-select").value;
  try {
    const session = await api("POST", "/api/sessions", { avatar, probe: params.get("probe") === "1" });
    state.sessionId = session.id;
    const pc = state.pc = new RTCPeerConnection({ iceServers: [] });
    pc.addTransceiver("video", { direction: "recvonly" });
    state.audioSender = pc.addTransceiver("audio", { direction: "sendrecv" }).sender;   // the microphone goes here
    const stream = new MediaStream();
    pc.ontrack = (event) => { stream.addTrack(event.track); $("avatar").srcObject = stream; };
    pc.onconnectionstatechange = () => {
      setStatus(`${avatar}: ${pc.connectionState}`, pc.connectionState === "failed");
    };
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIceGathering(pc);
    const answer = await api("POST", `/api/sessions/${session.id}/offer`, { sdp: pc.localDescription.sdp, type: "offer" });
    await pc.setRemoteDescription(answer);
    $("inputs").disabled = false;
    $("stop").disabled = false;
    setStatus(`${avatar}: connecting (latency ${session.latency_ms} ms + one frame)`);
    pollSpeaking();
  } catch (error) {
    setStatus(`could not start: ${error.message}`, true);
    $("start").disabled = false;
  }
}

async function stopSession() {
  const id = state.sessionId;
  state.sessionId = null;
  if (state.micTrack) { state.micTrack.stop(); state.micTrack = null; }
  if (state.pc) { state.pc.close(); state.pc = null; }
  if (id) { try { await api("DELETE", `/api/sessions/${id}`); } catch (error) { /* already gone */ } }
  $("inputs").disabled = true;
  $("stop").disabled = true;
  $("start").disabled = false;
  setStatus("stopped");
}

async function pollSpeaking() {
  while (state.sessionId) {
    try {
      const result = await api("GET", `/api/sessions/${state.sessionId}/speaking`);
      $("speaking").textContent = result.speaking ? "speaking" : "idle";
      $("speaking").classList.toggle("on", result.speaking);
    } catch (error) { /* the session may have just closed */ }
    await new Promise((resolve) => setTimeout(resolve, SPEAKING_POLL_MS));
  }
}

async function run(label, action) {
  try {
    const result = await action();
    setStatus(label + (result && result.seconds ? ` (${result.seconds} s)` : ""));
    return result;
  } catch (error) {
    setStatus(`${label} failed: ${error.message}`, true);
    return null;
  }
}

const session = (path) => `/api/sessions/${state.sessionId}/${path}`;

async function toggleMic() {
  if (state.micTrack) {
    await state.audioSender.replaceTrack(null);
    state.micTrack.stop();
    state.micTrack = null;
    $("mic").textContent = "Microphone on";
    return;
  }
  try {
    const media = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true } });
    state.micTrack = media.getAudioTracks()[0];
    await state.audioSender.replaceTrack(state.micTrack);
    $("mic").textContent = "Microphone off";
    setStatus("listening to the microphone");
  } catch (error) {
    setStatus(`microphone: ${error.message}`, true);
  }
}

function uploadFile() {
  const file = $("file").files[0];
  if (!file) { setStatus("choose an audio file first", true); return null; }
  const extension = file.name.split(".").pop().toLowerCase();
  const type = file.type || EXTENSION_TYPES[extension] || "application/octet-stream";
  return run(`speaking ${file.name}`, () => api("POST", session("audio"), file, type));
}

async function toggleRecord() {
  if (!state.recording) {
    if (await run("recording", () => api("POST", session("record"), { action: "start" }))) {
      state.recording = true;
      $("record").textContent = "Stop recording";
      $("download").hidden = true;
    }
    return;
  }
  const result = await run("recording stopped", () => api("POST", session("record"), { action: "stop" }));
  state.recording = false;
  $("record").textContent = "Record";
  if (result) { $("download").href = result.url; $("download").hidden = false; }
}

function unmute() {
  $("avatar").muted = false;
  $("avatar").play();
  $("unmute").hidden = true;
}

async function autoplay() {
  // Muted: browsers allow muted autoplay without a click; the Unmute button turns the sound on.
  $("avatar").muted = true;
  $("unmute").hidden = false;
  await startSession();
  if (!state.sessionId) return;
  const sample = parseInt(params.get("sample") || "0", 10);
  if (params.get("probe") === "1") {
    await waitForVideo();
    await new Promise((resolve) => setTimeout(resolve, PROBE_WARMUP_MS));
    runProbe();
  } else if (sample > 0) {
    await run(`playing sample ${sample}`, () => api("POST", session("sample"), { number: sample }));
  }
}

function waitForVideo() {
  const video = $("avatar");
  return new Promise((resolve) => {
    const check = () => (video.currentTime > 0 ? resolve() : setTimeout(check, 50));
    check();
  });
}

// ------------------------------------------------------------------------------------- sync probe
// Video: each presented frame's stamp (frame index, "a burst starts here") and its display time
// (requestVideoFrameCallback). Audio: the remote track's samples as they are played out
// (MediaStreamTrackProcessor), where each tone burst starts. offset = audio onset - video onset.
// PROBE_WARMUP_MS: the browser aligns the tracks from the RTCP sender reports (about one a second),
// so the probe starts once it has had a few.
const PROBE_STAMP_BITS = 12, PROBE_BLOCKS_ACROSS = 16, PROBE_THRESHOLD = 0.1, PROBE_QUIET_MS = 500;
const PROBE_WARMUP_MS = 5000;

async function runProbe() {
  const video = $("avatar");
  const probe = state.probe = { videoOnsets: [], audioOnsets: [], frames: 0, done: false, error: null };
  const canvas = document.createElement("canvas");
  const context = canvas.getContext("2d", { willReadFrequently: true });
  const onFrame = (now, metadata) => {
    canvas.width = video.videoWidth; canvas.height = video.videoHeight;
    context.drawImage(video, 0, 0);
    const side = Math.max(Math.floor(video.videoWidth / PROBE_BLOCKS_ACROSS), 1);
    const bit = (b) => context.getImageData(b * side + side / 2, side / 2, 1, 1).data[1] > 127 ? 1 : 0;
    let index = 0;
    for (let b = 0; b < PROBE_STAMP_BITS; b++) index |= bit(b) << b;
    probe.frames++;
    if (bit(PROBE_STAMP_BITS)) probe.videoOnsets.push({ index, time: metadata.expectedDisplayTime });
    if (!probe.done) video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
  try {
    const track = video.srcObject.getAudioTracks()[0];
    const reader = new MediaStreamTrackProcessor({ track }).readable.getReader();
    api("POST", session("probe"), { bursts: parseInt(params.get("probe_bursts") || "20", 10) });
    let lastLoud = -Infinity;
    while (!probe.done) {
      const { value: data, done } = await reader.read();
      if (done) break;
      const readAt = performance.now();
      const samples = new Float32Array(data.numberOfFrames);
      data.copyTo(samples, { planeIndex: 0, format: "f32-planar" });
      for (let i = 0; i < samples.length; i++) {
        if (Math.abs(samples[i]) > PROBE_THRESHOLD) {
          const at = readAt - ((samples.length - i) / data.sampleRate) * 1000;
          if (at - lastLoud > PROBE_QUIET_MS) probe.audioOnsets.push(at);
          lastLoud = at;
        }
      }
      data.close();
    }
  } catch (error) {
    probe.error = error.message;
  }
}

// ------------------------------------------------------------------------------------- wiring
$("start").onclick = startSession;
$("stop").onclick = stopSession;
$("mic").onclick = toggleMic;
$("upload").onclick = uploadFile;
$("sample").onclick = () => run("playing sample", () => api("POST", session("sample"), { number: parseInt($("sample-select").value, 10) }));
$("speak").onclick = () => run("speaking", () => api("POST", session("speak"), { text: $("text").value }));
$("interrupt").onclick = () => run("interrupted", () => api("POST", session("interrupt")));
$("record").onclick = toggleRecord;
$("unmute").onclick = unmute;
window.addEventListener("pagehide", () => {
  if (state.sessionId) fetch(`/api/sessions/${state.sessionId}`, { method: "DELETE", keepalive: true });
});

loadInfo().then(() => { if (params.get("autoplay") === "1") autoplay(); })
  .catch((error) => setStatus(`cannot reach the server: ${error.message}`, true));
