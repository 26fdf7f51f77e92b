"""Helpers for the server tests: a real uvicorn server on a free port, audio files in every input format, and a
scheduler job's sink with the lone-rollout reference it is checked against."""

from __future__ import annotations

import base64
import io
import queue
import threading
import time

import numpy as np
import soundfile as sf
import torch
import uvicorn

# What the random-weight server allows (small, so the limit tests are cheap).
LIMITS = dict(max_model_len=320, default_max_tokens=8, max_body_mb=1.0, max_audio_seconds=4.0, max_audio_parts=3,
              max_num_seqs=8, max_waiting=4, max_n=4)
GREEDY_LONG = "Hello"  # the random tiny model (seed 0) does not stop within 200 greedy tokens after this prompt


class Live:
    """A uvicorn server running `app` on a free port of 127.0.0.1, in a thread."""

    def __init__(self, app):
        self.app = app
        self.uvicorn = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                                     timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.uvicorn.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.uvicorn.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = self.uvicorn.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    @property
    def server(self):
        return self.app.state.server

    def stop(self) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(10)


def tone(freq_hz: float = 440.0, seconds: float = 1.0, rate: int = 16_000, channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    wave = (0.4 * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def audio_file(wave: np.ndarray, fmt: str = "wav", rate: int = 16_000) -> bytes:
    """`wave` written as a wav, flac, ogg (vorbis) or mp3 file."""
    buf = io.BytesIO()
    subtype = {"wav": "PCM_16", "flac": "PCM_16", "ogg": "VORBIS", "mp3": "MPEG_LAYER_III"}[fmt]
    sf.write(buf, wave, rate, format={"mp3": "MP3"}.get(fmt, fmt.upper()), subtype=subtype)
    return buf.getvalue()


def audio_part(wave: np.ndarray | None = None, fmt: str = "wav", rate: int = 16_000) -> dict:
    wave = tone() if wave is None else wave
    data = base64.b64encode(audio_file(wave, fmt, rate)).decode()
    return {"type": "input_audio", "input_audio": {"data": data, "format": fmt}}


class Collector:
    """A scheduler job's sink: keeps every event; `wait()` returns each row's tokens and finish reason and keeps
    each row's log-probs in `logprobs`."""

    def __init__(self):
        self.events: queue.Queue = queue.Queue()
        self.logprobs: list[list[float]] = []

    def __call__(self, event) -> None:
        self.events.put(event)

    def wait(self, n: int, timeout: float = 120.0) -> tuple[list[list[int]], list[str | None]]:
        tokens, reasons, self.logprobs = [[] for _ in range(n)], [None] * n, [[] for _ in range(n)]
        while True:
            event = self.events.get(timeout=timeout)
            assert event.error is None, event.error
            for r, (tok, why) in enumerate(zip(event.tokens, event.finish_reasons)):
                if tok is not None:
                    tokens[r].append(tok)
                    self.logprobs[r].append(event.logprobs[r])
                reasons[r] = why or reasons[r]
            if event.done:
                return tokens, reasons


def assert_decodes_alone(model, prompt, cfg, n: int, sink: Collector) -> list[list[int]]:
    """The job behind `sink` got what `mgrd.rollout.rollout` gives for its prompt alone: the same tokens and
    finish reasons, and log-probs within float rounding of the batch shapes (1e-5). Returns its rows' tokens."""
    from mgrd.rollout import rollout

    tokens, reasons = sink.wait(n)
    ref = rollout(model, [prompt], cfg, num_samples=n)
    assert tokens == [ref.row_tokens(r) for r in range(n)]
    assert reasons == ref.finish_reasons
    for r in range(n):
        torch.testing.assert_close(torch.tensor(sink.logprobs[r]), ref.logprobs[r, : len(tokens[r])], atol=1e-5,
                                   rtol=0)
    return tokens
