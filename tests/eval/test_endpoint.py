"""`mgrd eval --endpoint` against a real OpenAI-compatible HTTP server on localhost (a small scripted FastAPI app):
the request carries the report's prompt with input_audio parts (25 s chunks), an endpoint error mid-run is
recorded as an error (never a wrong answer), and a resume asks only what is missing."""

import base64
import io
import json

import pytest
import soundfile as sf
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from mgrd.eval.cli import main

from . import fixtures as fx
from .servers import completion, serve

ANSWERS = {"Based on the given audio": ("The voice is low.", "A"), "Which word appears first": (None, "wind"),
           "Who is speaking?": ("Two voices.", "Woman and child"),
           "Can you identify": ("I hear no bark.", "No, it is not present.")}


class ScriptedModel:
    """Answers each MMAU question with a fixed reply; questions in `failing` get HTTP 503."""

    def __init__(self):
        self.requests, self.failing = [], set()
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            self.requests.append(body)
            text = body["messages"][0]["content"][0]["text"]
            key = next(k for k in ANSWERS if text.startswith(k))
            if key in self.failing:
                return JSONResponse({"error": {"message": "overloaded", "type": "server_error"}}, status_code=503)
            reasoning, content = ANSWERS[key]
            reply = completion(content)
            if reasoning is not None:
                reply["choices"][0]["message"]["reasoning_content"] = reasoning
            return reply

        self.app = app


@pytest.mark.integration
def test_endpoint_run_error_then_resume(tmp_path, capsys):
    data = fx.write_mmau(tmp_path / "mmau")
    fx.write_wav(data / "test-mini-audios" / "f-004.wav", 300, seconds=26.0)  # two 25 s chunks
    model = ScriptedModel()
    model.failing = {"Who is speaking?"}
    args = ["--task", "mmau", "--data", str(data), "--out", str(tmp_path / "run"), "--max-retries", "1",
            "--concurrency", "2", "--no-progress", "--no-report"]
    with serve(model.app) as url:
        assert main([*args, "--endpoint", url]) == 1  # finished, with one item in error
        first = json.loads((tmp_path / "run" / "summary.json").read_text())
        assert first["overall"]["errors"] == 1 and first["overall"]["official_n"] == 3
        assert first["errors"][0].startswith("f-003 [clean]: endpoint HTTP 503")
        assert len(model.requests) == 3 + 2  # f-003 asked twice (one retry)
        body = next(b for b in model.requests if b["messages"][0]["content"][0]["text"].startswith("Can you"))
        parts = body["messages"][0]["content"]
        assert [p["type"] for p in parts] == ["text", "input_audio", "input_audio"]
        wave, rate = sf.read(io.BytesIO(base64.b64decode(parts[1]["input_audio"]["data"])))
        assert rate == 16000 and len(wave) == 25 * 16000 and parts[1]["input_audio"]["format"] == "wav"
        assert body["temperature"] == 0.7 and body["max_tokens"] == 32000

        model.failing, model.requests = set(), []
        assert main([*args, "--endpoint", url]) == 0
        assert [b["messages"][0]["content"][0]["text"].split("\n")[0] for b in model.requests] == ["Who is speaking?"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    # official: "A" (letter alone) fails string_match, the other three match; normalised maps the letter
    assert (summary["overall"]["errors"], summary["overall"]["official"], summary["overall"]["normalised"]) == \
        (0, 75.0, 100.0)
    records = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 4
    assert records[0]["completions"][0]["text"] == "The voice is low.\n</think>\nA"
    assert records[0]["completions"][0]["reasoning"] == "The voice is low."


@pytest.mark.integration
def test_mgrd_serve_endpoint_answers_as_the_local_path(tiny_model, tiny_suite, tmp_path):
    """The same greedy tokens through `mgrd serve` (input_audio WAV parts, the server's own prompt encoding) as
    through the local rollout path: the endpoint client sends the report's prompt unchanged."""
    app_module = pytest.importorskip("mgrd.serve.app")
    model, suite = tiny_model, tiny_suite
    common = ["--task", "synthetic", "--data", str(suite), "--temperature", "0", "--max-new-tokens", "12",
              "--require-think", "--no-progress", "--no-report"]
    server = app_module.load_server(model, served_model_name="tiny", max_model_len=512)
    try:
        with serve(app_module.create_app(server)) as url:
            assert main([*common, "--endpoint", url, "--served-model", "tiny", "--out", str(tmp_path / "ep")]) == 0
    finally:
        server.scheduler.stop()
    assert main([*common, "--model", str(model), "--batch-size", "4", "--out", str(tmp_path / "local")]) == 0

    def completions(run):
        rows = [json.loads(line) for line in (tmp_path / run / "samples.jsonl").read_text().splitlines()]
        return {r["item_id"]: (r["completions"][0]["reasoning"], r["completions"][0]["answer"],
                               r["completions"][0]["n_tokens"]) for r in rows}

    assert completions("ep") == completions("local") and len(completions("ep")) == 4
