"""Speech that reaches a session: uploaded files (decoded by FFmpeg), raw 16-bit PCM chunks
(``audio/L16``, streaming), text (espeak-ng) and the bundled samples. Requests never name a file: an
upload is written under the server's own folder with a name the server chooses, and samples are
chosen by number."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from talksplat.core.constants import SAMPLE_RATE
from talksplat.errors import TalksplatError

# Containers FFmpeg decodes for us; what browsers and curl send for wav/mp3/ogg/flac/m4a/webm files.
FILE_TYPES = frozenset({
    "audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave", "audio/mpeg", "audio/mp3", "audio/ogg",
    "audio/opus", "audio/flac", "audio/x-flac", "audio/mp4", "audio/m4a", "audio/x-m4a", "audio/aac",
    "audio/webm", "video/webm", "video/mp4",
})
PCM_TYPE = "audio/l16"          # RFC 2586: big-endian by the RFC; we take little-endian as browsers make it
PCM_ENDIAN_PARAM = "endian"     # audio/L16;rate=16000;endian=little (the default here)
PCM_SCALE = 32768.0
ESPEAK = "espeak-ng"
ESPEAK_VOICE = "en-us"
ESPEAK_WORDS_PER_MINUTE = "160"


def accepted_types() -> list[str]:
    return sorted(FILE_TYPES) + ["audio/L16;rate=16000 (16-bit mono PCM chunks, little-endian)"]


def decode_pcm(body: bytes, params: dict[str, str]) -> np.ndarray:
    """``audio/L16`` chunk -> float32; the rate must be 16000 and the channels 1."""
    rate = params.get("rate", str(SAMPLE_RATE))
    channels = params.get("channels", "1")
    if rate != str(SAMPLE_RATE) or channels != "1":
        raise TalksplatError(f"audio/L16 must be mono at {SAMPLE_RATE} Hz (rate={rate}, channels={channels}); "
                             "resample it first")
    if len(body) % 2:
        raise TalksplatError("audio/L16 body has an odd number of bytes; send whole 16-bit samples")
    endian = ">" if params.get(PCM_ENDIAN_PARAM, "little").lower() == "big" else "<"
    return np.frombuffer(body, dtype=f"{endian}i2").astype(np.float32) / PCM_SCALE


def decode_file(body: bytes, work_dir: Path, max_seconds: float) -> np.ndarray:
    """An uploaded audio file -> validated 16 kHz mono float32 (blocking: run it in a thread)."""
    from talksplat.render.renderer import load_driving_audio

    fd, name = tempfile.mkstemp(prefix="upload-", suffix=".bin", dir=work_dir)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
        try:
            return load_driving_audio(Path(name), max_seconds)
        except TalksplatError as exc:   # never show the server's file names
            raise TalksplatError(str(exc).replace(name, "the upload")) from None
    finally:
        os.unlink(name)


def tts_available() -> bool:
    return shutil.which(ESPEAK) is not None


async def synthesize(text: str, timeout_s: float) -> np.ndarray:
    """Text -> 16 kHz float32 speech with espeak-ng (the text goes in on stdin, never as an argument)."""
    from talksplat.io.audio import load_audio

    exe = shutil.which(ESPEAK)
    if exe is None:
        raise TalksplatError("text-to-speech needs espeak-ng, which is not installed here "
                             "(Debian/Ubuntu: apt-get install espeak-ng)")
    process = await asyncio.create_subprocess_exec(
        exe, "--stdout", "-v", ESPEAK_VOICE, "-s", ESPEAK_WORDS_PER_MINUTE,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        wav, err = await asyncio.wait_for(process.communicate(text.encode("utf-8")), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise TalksplatError(f"espeak-ng took longer than {timeout_s:.0f} s; send shorter text") from None
    if process.returncode != 0 or not wav:
        raise TalksplatError(f"espeak-ng failed: {err.decode(errors='replace').strip()[:200] or 'no audio'}")
    with tempfile.NamedTemporaryFile(suffix=".wav") as handle:
        handle.write(wav)
        handle.flush()
        return load_audio(handle.name, SAMPLE_RATE)


def bundled_sample(number: int) -> tuple[np.ndarray, dict]:
    """Bundled speech clip ``number`` (1-based, wrapping around) and its attribution."""
    from talksplat.io.audio import load_audio
    from talksplat.synthetic import bundled_clips

    clips = bundled_clips()
    clip = clips[(int(number) - 1) % len(clips)]
    info = {k: clip[k] for k in ("utterance", "reader", "text_source", "licence", "duration_s") if k in clip}
    return load_audio(clip["path"], SAMPLE_RATE), info


def wav_bytes(samples: np.ndarray) -> bytes:
    """16 kHz float32 -> 16-bit WAV bytes (tests and the benchmark upload these)."""
    import wave

    pcm = (np.clip(samples, -1, 1) * (PCM_SCALE - 1)).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(SAMPLE_RATE)
        handle.writeframes(pcm.tobytes())
    return buffer.getvalue()
