"""Speech out: the answer spoken by espeak-ng (offline), as WAV or 16-bit PCM at 24 kHz, sentence by sentence.

Step-Audio-R1 writes text only (reference §9.3); the server speaks the answer, never the thinking, with the
`espeak-ng` program (a formant synthesiser: robotic, but offline, fast and on every Debian). OpenAI's voice names
map onto espeak-ng voices. `SentenceChunker` cuts streamed answer text into sentences, so the first audio can be
sent as soon as the first sentence is complete. Audio is resampled to 24 kHz, the rate of OpenAI's `pcm16`.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess

import numpy as np
import soundfile as sf
import soxr

RATE = 24_000
ESPEAK = "espeak-ng"
# OpenAI voice names -> espeak-ng voice (+variant); espeak's own English voices are accepted by name.
VOICES = {
    "alloy": "en-us", "echo": "en-us+m3", "fable": "en-gb", "onyx": "en-us+m7", "nova": "en-us+f3",
    "shimmer": "en-us+f2", "ash": "en-us+m2", "ballad": "en-gb+m4", "coral": "en-us+f4", "sage": "en-gb+f2",
    "verse": "en-us+m5", "en": "en", "en-us": "en-us", "en-gb": "en-gb",
}
MAX_SENTENCE_CHARS = 240  # a chunk without sentence punctuation is cut at a space past this many characters
_SENTENCE_END = re.compile(r"[.!?;:。！？]+[\"')\]]*\s|\n")


class SpeechError(RuntimeError):
    """espeak-ng is missing or failed."""


def available() -> bool:
    return shutil.which(ESPEAK) is not None


def voice_name(voice: str) -> str:
    """The espeak-ng voice for an OpenAI voice name; ValueError naming the choices for any other."""
    if voice not in VOICES:
        raise ValueError(f"unknown voice {voice!r}; choose from {', '.join(VOICES)}")
    return VOICES[voice]


def speak(text: str, voice: str = "alloy", timeout: float = 60.0) -> np.ndarray:
    """`[S]` float32 samples at `RATE` of `text` spoken by espeak-ng (empty for blank text).

    The text goes in on stdin, so nothing in it is read as an option.

    Raises:
        ValueError: an unknown voice. SpeechError: espeak-ng missing, failing or timing out.
    """
    espeak_voice = voice_name(voice)
    if not text.strip():
        return np.zeros(0, dtype=np.float32)
    if not available():
        raise SpeechError("espeak-ng is not installed (apt-get install espeak-ng)")
    try:
        done = subprocess.run([ESPEAK, "--stdout", "-v", espeak_voice, "--stdin"], input=text.encode("utf-8"),
                              capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise SpeechError(f"espeak-ng took over {timeout:g} s") from None
    if done.returncode != 0 or not done.stdout:
        raise SpeechError(f"espeak-ng failed ({done.returncode}): {done.stderr.decode(errors='replace').strip()}")
    wave, rate = sf.read(io.BytesIO(done.stdout), dtype="float32")
    if wave.ndim > 1:
        wave = wave.mean(axis=1)
    return soxr.resample(wave, rate, RATE).astype(np.float32) if rate != RATE else wave


def wav_bytes(wave: np.ndarray, rate: int = RATE) -> bytes:
    """A 16-bit mono WAV file of `[S]` float samples."""
    buf = io.BytesIO()
    sf.write(buf, wave, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def pcm16_bytes(wave: np.ndarray) -> bytes:
    """Raw little-endian 16-bit samples (OpenAI's `pcm16`)."""
    return (np.clip(wave, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def encode(wave: np.ndarray, fmt: str) -> bytes:
    """`wave` as `fmt`: "wav" or "pcm16"."""
    return wav_bytes(wave) if fmt == "wav" else pcm16_bytes(wave)


class SentenceChunker:
    """Cut a stream of text into sentences: `feed(delta)` returns the sentences completed so far, `flush()` the
    rest. A sentence ends at `. ! ? ; :` (and their CJK forms) followed by whitespace, or at a newline; text
    without any is cut at a space once it passes `MAX_SENTENCE_CHARS`, so speech never waits for long."""

    def __init__(self, max_chars: int = MAX_SENTENCE_CHARS):
        self.max_chars = max_chars
        self._text = ""

    def feed(self, delta: str) -> list[str]:
        self._text += delta
        out = []
        while True:
            match = _SENTENCE_END.search(self._text)
            if match:
                cut = match.end()
            elif len(self._text) > self.max_chars:
                space = self._text.rfind(" ", 0, self.max_chars)
                cut = space + 1 if space > 0 else self.max_chars
            else:
                break
            sentence, self._text = self._text[:cut].strip(), self._text[cut:]
            if sentence:
                out.append(sentence)
        return out

    def flush(self) -> list[str]:
        rest, self._text = self._text.strip(), ""
        return [rest] if rest else []
