"""The HTTP server: OpenAI-compatible routes over the scheduler, with auth, limits, streaming and speech.

Routes: `POST /v1/chat/completions` (JSON or Server-Sent Events), `GET /v1/models`, `GET /health`, the OpenAPI
schema at `/openapi.json`, and the playground page at `/` (assets under `/static`, no CDN). Every error is
OpenAI's shape `{"error": {"message", "type", "param", "code"}}`: 400 for a bad request (FastAPI's 422 included),
401 without the API key, 404 for an unknown model or route, 413 for a body over the limit, 429 when the queue is
full, 500 when generation fails. Decoding audio and encoding the prompt run in a worker thread; the model runs on
the scheduler's thread; the event loop only moves text. A request whose client goes away (a closed stream, or a
closed connection while waiting for a whole completion) is cancelled, and its rows leave the batch at the next
step.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from mgrd.serve import tts
from mgrd.serve.protocol import (
    ApiError, AudioOutput, ChatCompletionRequest, Limits, Prepared, RowText, assistant_message, chunk, completion_body,
    error_body, new_id, prepare, usage,
)
from mgrd.serve.scheduler import JobEvent, QueueFull, Scheduler

STATIC = Path(__file__).parent / "static"
DISCONNECT_POLL_S = 0.5  # how often a non-streaming request checks that its client is still there


@dataclass
class Server:
    """What the routes serve: the model's tokenizer and audio config, the scheduler, the name and limits."""

    tokenizer: object
    audio_config: object
    scheduler: Scheduler
    name: str
    limits: Limits
    api_key: str | None = None
    max_body_bytes: int = 64 * 2**20
    tokenizer_lock: threading.Lock = field(default_factory=threading.Lock)  # see `protocol.prepare`


def create_app(server: Server) -> FastAPI:
    """The FastAPI application for `server` (its scheduler must be started by the caller)."""
    app = FastAPI(title="mgrd serve", version="1", description="OpenAI-compatible chat completions with audio in, "
                  "reasoning_content split from content, streaming, and spoken answers.")
    app.state.server = server
    app.add_middleware(BodyLimit, max_bytes=server.max_body_bytes)
    _add_error_handlers(app)
    auth = Depends(_auth(server))

    @app.get("/health")
    async def health() -> dict:
        """Liveness, and the scheduler's load."""
        return {"status": "ok", **server.scheduler.load}

    @app.get("/v1/models", dependencies=[auth])
    async def models() -> dict:
        """The one served model."""
        return {"object": "list", "data": [{"id": server.name, "object": "model", "created": 0, "owned_by": "mgrd",
                                            "max_model_len": server.limits.max_model_len}]}

    @app.post("/v1/chat/completions", dependencies=[auth], responses=_ERROR_RESPONSES)
    async def chat_completions(req: ChatCompletionRequest, request: Request):
        """A chat completion: `reasoning_content` (the thinking) apart from `content` (the answer)."""
        if req.model is not None and req.model != server.name:
            raise ApiError(404, f"the model {req.model!r} does not exist; this server serves {server.name!r}",
                           type="not_found_error", param="model", code="model_not_found")
        speech = _speech_settings(req)
        prep = await run_in_threadpool(prepare, req, server.tokenizer, server.audio_config, server.limits,
                                       server.tokenizer_lock)
        run = _Run(server, prep)
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(_stream(run, server.name, speech, include_usage),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        return JSONResponse(await _complete(run, request, server.name, speech))

    @app.get("/", include_in_schema=False)
    async def playground():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


# --------------------------------------------------------------------------------------------- one generation
class _Run:
    """One request in flight: its scheduler job, and each choice's text as the job's events arrive.

    Scheduler events and spoken sentences arrive on one asyncio queue (`queue`), put there from other threads.
    """

    def __init__(self, server: Server, prep: Prepared):
        self.server, self.prep = server, prep
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.finish: list[str | None] = [None] * prep.n
        self.done = False
        try:  # the sink only queues, so no event is handled before the rows below exist
            self.job = server.scheduler.submit(prep.prompt, prep.cfg, prep.n, self._put)
        except QueueFull as err:
            raise ApiError(429, str(err), type="rate_limit_error", code="queue_full") from None
        except ValueError as err:
            raise ApiError(400, str(err)) from None
        self.rows = [RowText(server.tokenizer, stop_ids=self.job.stop_ids, stop_strings=prep.stop_strings,
                             skip_special_tokens=prep.skip_special_tokens, prefix=prep.prefix)
                     for _ in range(prep.n)]

    def _put(self, item) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def handle(self, event: JobEvent) -> list[tuple[int, str, str, str | None]]:
        """`(row, reasoning piece, answer piece, finish reason or None)` for the rows this event moved."""
        out = []
        for r, token in enumerate(event.tokens):
            row = self.rows[r]
            if token is None or row.closed:
                continue
            reasoning, answer = row.push(token)
            why = "stop" if row.stopped else event.finish_reasons[r]
            if row.stopped:
                self.server.scheduler.end_row(self.job, r)
            if why:
                self.finish[r] = why
                tail = row.finish()
                reasoning, answer = reasoning + tail[0], answer + tail[1]
            if reasoning or answer or why:
                out.append((r, reasoning, answer, why))
        if event.done:
            self.done = True
            for r, row in enumerate(self.rows):  # rows ended at a stop string closed already; nothing is left
                if not row.closed:
                    self.finish[r] = self.finish[r] or "stop"
                    out.append((r, *row.finish(), self.finish[r]))
        return out

    def cancel(self) -> None:
        if not self.done:
            self.server.scheduler.cancel(self.job)
            self.done = True

    @property
    def completion_tokens(self) -> int:
        return sum(row.tokens for row in self.rows)


async def _complete(run: _Run, request: Request, model: str, speech: SpeechSettings | None) -> dict:
    """The whole completion as one document; the job is cancelled if the client disconnects meanwhile."""
    reasoning, answer = [[] for _ in run.rows], [[] for _ in run.rows]
    try:
        while not run.done:
            try:
                event = await asyncio.wait_for(run.queue.get(), DISCONNECT_POLL_S)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    run.cancel()
                    return {}
                continue
            if event.error:
                raise ApiError(500, event.error, type="internal_error")
            for r, rp, ap, _ in run.handle(event):
                reasoning[r].append(rp)
                answer[r].append(ap)
    finally:
        run.cancel()
    messages = []
    for r, row in enumerate(run.rows):
        text = "".join(answer[r]) if row.split.has_answer else None
        message = assistant_message("".join(reasoning[r]), text)
        if speech is not None:
            message["audio"] = await _spoken(text, speech) if text else None
        messages.append(message)
    return completion_body(messages, run.finish, len(run.prep.prompt.input_ids), run.completion_tokens, model)


async def _spoken(text: str, speech: SpeechSettings) -> dict:
    """OpenAI's `message.audio`: the answer spoken, base64, with its transcript."""
    try:
        wave = await asyncio.to_thread(tts.speak, text, speech.voice)
    except tts.SpeechError as err:
        raise ApiError(500, f"speech synthesis failed: {err}", type="internal_error") from None
    return {"id": new_id("audio"), "data": base64.b64encode(tts.encode(wave, speech.format)).decode(),
            "expires_at": int(time.time()) + 3600, "transcript": text}


async def _stream(run: _Run, model: str, speech: SpeechSettings | None, include_usage: bool) -> AsyncIterator[str]:
    """Server-Sent Events: a role chunk per choice, then `delta.reasoning_content` / `delta.content` pieces, spoken
    sentences as `delta.audio` (each as soon as espeak-ng has it), a finish chunk per choice, the usage chunk if
    asked, and `[DONE]`. Closing the stream cancels the job."""
    cid, created = new_id(), int(time.time())

    def sse(choices: list[dict], usage_doc: dict | None = None) -> str:
        doc = chunk(cid, created, model, choices, usage_doc)
        if include_usage:
            doc.setdefault("usage", None)  # OpenAI: null on every chunk but the last
        return f"data: {json.dumps(doc, ensure_ascii=False)}\n\n"

    def delta(r: int, d: dict, why: str | None = None) -> dict:
        return {"index": r, "delta": d, "logprobs": None, "finish_reason": why}

    speaker = _Speaker(run, speech) if speech else None
    finishing: list[dict] = []  # finish chunks wait for their choice's audio
    try:
        yield sse([delta(r, {"role": "assistant", "content": ""}) for r in range(len(run.rows))])
        while not run.done or (speaker and not speaker.finished):
            item = await run.queue.get()
            if isinstance(item, JobEvent):
                if item.error:
                    yield f"data: {json.dumps(error_body(item.error, 'internal_error'))}\n\n"
                    break
                for r, rp, ap, why in run.handle(item):
                    if rp:
                        yield sse([delta(r, {"reasoning_content": rp})])
                    if ap:
                        yield sse([delta(r, {"content": ap})])
                    if speaker:
                        speaker.say(r, ap, final=why is not None)
                    if why and speaker:
                        finishing.append(delta(r, {}, why))
                    elif why:
                        yield sse([delta(r, {}, why)])
                if run.done and speaker:
                    speaker.close()
            elif item[0] == "audio":
                _, r, audio = item
                yield sse([delta(r, {"audio": audio})])
            elif item[0] == "audio_error":
                yield f"data: {json.dumps(error_body(item[1], 'internal_error'))}\n\n"
            elif item[0] == "audio_done":
                speaker.finished = True
        for doc in finishing:
            yield sse([doc])
        if include_usage:
            yield sse([], usage(len(run.prep.prompt.input_ids), run.completion_tokens))
        yield "data: [DONE]\n\n"
    finally:
        run.cancel()
        if speaker:
            speaker.task.cancel()


@dataclass
class SpeechSettings:
    """The voice and format of a request's spoken answer."""

    voice: str
    format: str


def _speech_settings(req: ChatCompletionRequest) -> SpeechSettings | None:
    """The voice and format when the request asks for audio out; 400 for a voice espeak-ng cannot give."""
    if not req.modalities or "audio" not in req.modalities:
        return None
    audio = req.audio or AudioOutput()
    try:
        tts.voice_name(audio.voice)
    except ValueError as err:
        raise ApiError(400, str(err), param="audio.voice") from None
    if not tts.available():
        raise ApiError(400, "speech out needs espeak-ng, which this server lacks", param="modalities")
    return SpeechSettings(audio.voice, audio.format)


class _Speaker:
    """Speaks each choice's answer sentence by sentence on a worker task; results go to the run's queue as
    `("audio", row, {"id", "data", "transcript"})`, then `("audio_done",)`."""

    def __init__(self, run: _Run, speech: SpeechSettings):
        self.run, self.speech = run, speech
        self.chunkers = [tts.SentenceChunker() for _ in run.rows]
        self.ids = [new_id("audio") for _ in run.rows]
        self.sentences: asyncio.Queue = asyncio.Queue()
        self.finished = False
        self.task = asyncio.get_running_loop().create_task(self._work())

    def say(self, row: int, text: str, final: bool) -> None:
        for sentence in self.chunkers[row].feed(text) + (self.chunkers[row].flush() if final else []):
            self.sentences.put_nowait((row, sentence))

    def close(self) -> None:
        self.sentences.put_nowait(None)

    async def _work(self) -> None:
        while (item := await self.sentences.get()) is not None:
            row, sentence = item
            try:
                wave = await asyncio.to_thread(tts.speak, sentence, self.speech.voice)
            except tts.SpeechError as err:
                self.run.queue.put_nowait(("audio_error", f"speech synthesis failed: {err}"))
                continue
            data = base64.b64encode(tts.encode(wave, self.speech.format)).decode()
            self.run.queue.put_nowait(("audio", row, {"id": self.ids[row], "data": data, "transcript": sentence,
                                                      "expires_at": int(time.time()) + 3600}))
        self.run.queue.put_nowait(("audio_done",))


# --------------------------------------------------------------------------------------------- auth, limits, errors
def _auth(server: Server):
    async def check(request: Request) -> None:
        if server.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(key.strip().encode(), server.api_key.encode()):
            raise ApiError(401, "invalid or missing API key: send 'Authorization: Bearer <key>'",
                           code="invalid_api_key")

    return check


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` gets 413 before the app parses it (a declared
    Content-Length is checked first; a chunked body is counted as it arrives)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send)
        parts, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            parts.append(message.get("body", b""))
            total += len(parts[-1])
            if total > self.max_bytes:
                return await self._refuse(send)
            if not message.get("more_body"):
                break
        body, replayed = b"".join(parts), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send) -> None:
        mb = self.max_bytes / 2**20
        await _send_json(send, 413, error_body(f"request body over this server's limit of {mb:g} MiB",
                                               code="request_too_large"))


async def _send_json(send, status: int, doc: dict) -> None:
    body = json.dumps(doc).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


_ERROR_SCHEMA = {"content": {"application/json": {"schema": {"type": "object", "properties": {"error": {
    "type": "object", "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                                     "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}}}}}
_ERROR_RESPONSES = {status: {"description": what, **_ERROR_SCHEMA} for status, what in (
    (400, "bad request"), (401, "missing or wrong API key"), (404, "unknown model"), (413, "body too large"),
    (429, "queue full"), (500, "generation failed"))}


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        problems = err.errors()
        first = problems[0] if problems else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        message = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}"
                            for e in problems[:5])
        return JSONResponse(error_body(message or "invalid request", param=where), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException):
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(err.detail), kind), status_code=err.status_code)

    @app.exception_handler(Exception)
    async def crashed(request: Request, err: Exception):
        return JSONResponse(error_body(f"internal error: {type(err).__name__}: {err}", "internal_error"),
                            status_code=500)


# --------------------------------------------------------------------------------------------- loading
def load_server(model_dir: str | Path, *, device: str = "cpu", dtype: str = "auto",
                served_model_name: str | None = None, max_model_len: int | None = None, api_key: str | None = None,
                max_num_seqs: int = 32, max_waiting: int = 64, max_body_mb: float = 64.0,
                max_audio_seconds: float = 600.0, max_audio_parts: int = 64, max_n: int = 8,
                default_max_tokens: int | None = None) -> Server:
    """Load a checkpoint folder (official layout + tokenizer) and start its scheduler.

    Raises:
        ValueError: a missing folder, a `max_model_len` beyond the model's positions, or a bad limit.
    """
    from mgrd.models import ModelConfig, load_pretrained
    from mgrd.rollout.engine import DEFAULT_MAX_POSITIONS
    from mgrd.tokenizer import load_tokenizer

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ValueError(f"no checkpoint in {model_dir} (config.json missing)")
    config = ModelConfig.from_file(model_dir / "config.json")
    positions = int(config.text.get("max_position_embeddings", DEFAULT_MAX_POSITIONS))
    if max_model_len is not None and not 1 < max_model_len <= positions:
        raise ValueError(f"--max-model-len must be in [2, {positions}] (the model's max_position_embeddings), "
                         f"got {max_model_len}")
    for name, value in (("max_num_seqs", max_num_seqs), ("max_n", max_n), ("max_audio_parts", max_audio_parts)):
        if value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if max_body_mb <= 0 or max_audio_seconds <= 0 or max_waiting < 0:
        raise ValueError("--max-body-mb and --max-audio-seconds must be > 0 and --max-waiting >= 0")
    if default_max_tokens is not None and default_max_tokens < 1:
        raise ValueError(f"--default-max-tokens must be >= 1, got {default_max_tokens}")
    tokenizer = load_tokenizer(model_dir)
    model = load_pretrained(model_dir, tokenizer=tokenizer, dtype=dtype, device=device).eval()
    limits = Limits(max_model_len=max_model_len or positions, max_audio_seconds=max_audio_seconds,
                    max_audio_parts=max_audio_parts, max_n=min(max_n, max_num_seqs),
                    default_max_tokens=default_max_tokens)
    scheduler = Scheduler(model, max_rows=max_num_seqs, max_waiting=max_waiting).start()
    return Server(tokenizer=tokenizer, audio_config=model.config.audio, scheduler=scheduler,
                  name=served_model_name or str(model_dir), limits=limits, api_key=api_key,
                  max_body_bytes=int(max_body_mb * 2**20))
