"""`mgrd serve` over real HTTP: the official `openai` client (and raw httpx for what it will not send) against
uvicorn serving tiny checkpoints: a random-weight one (invariants: prompts, usage, batch == single, limits) and the
scripted one of `scripted.py` (known text: the reasoning/answer split, stop strings, the official client's
request)."""

from __future__ import annotations

import concurrent.futures
import json
import time

import httpx2 as httpx  # the HTTP client the openai package itself uses
import openai
import pytest

from mgrd.chat import OFFICIAL_PART_JOIN, encode_chat
from mgrd.tokenizer import load_tokenizer
from .helpers import GREEDY_LONG, Live, audio_part, tone
from .scripted import ANSWER, REASONING, script_ids


def client(live, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key=kw.pop("api_key", "unused"), max_retries=0, **kw)


def ask(live, content, **kw):
    return client(live).chat.completions.create(model=live.server.name, messages=[{"role": "user", "content": content}],
                                                **kw)


def sse_events(response: httpx.Response) -> list:
    """The `data:` payloads of an SSE response, JSON-decoded, and the final "[DONE]"."""
    out = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            payload = line[len("data: "):]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


# ------------------------------------------------------------------------------------------------ basics
def test_models_health_and_schema(random_live):
    assert [m.id for m in client(random_live).models.list().data] == ["tiny"]
    health = httpx.get(random_live.url + "/health").json()
    assert health["status"] == "ok" and health["waiting_jobs"] == 0
    schema = httpx.get(random_live.url + "/openapi.json").json()
    body = schema["paths"]["/v1/chat/completions"]["post"]
    assert "requestBody" in body and {"400", "401", "404", "413", "429"} <= set(body["responses"])


def test_reasoning_and_answer_come_apart(scripted_live):
    tok = load_tokenizer(scripted_live.server.tokenizer.name_or_path)
    out = ask(scripted_live, "Which tone is higher?", max_tokens=64)
    choice = out.choices[0]
    assert choice.message.reasoning_content == REASONING and choice.message.content == ANSWER
    assert choice.finish_reason == "stop"
    prompt = encode_chat(tok, [{"role": "user", "content": "Which tone is higher?"}], part_join=OFFICIAL_PART_JOIN)
    assert out.usage.prompt_tokens == len(prompt.input_ids)
    assert out.usage.completion_tokens == len(script_ids(tok)) - 1  # the script's tokens and <|EOT|>
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


def test_budget_cut_leaves_content_none(scripted_live):
    out = ask(scripted_live, "Which?", max_completion_tokens=3)
    assert out.choices[0].finish_reason == "length" and out.choices[0].message.content is None
    assert out.usage.completion_tokens == 3 and REASONING.startswith(out.choices[0].message.reasoning_content)


@pytest.mark.parametrize("formats", [["wav"], ["flac", "ogg", "mp3"]])
def test_audio_parts_reach_the_prompt(random_live, formats):
    """Each input_audio part becomes its audio block (channel mean, official "\\n" join): the prompt tokens the
    server counts equal the local encoding of the same decoded audio."""
    parts = [{"type": "text", "text": "What do you hear?"}] + [audio_part(tone(300 + 100 * i, 0.6), f)
                                                              for i, f in enumerate(formats)]
    out = ask(random_live, parts, max_tokens=4, temperature=0)
    from mgrd.serve.protocol import decode_input_audio, InputAudio

    local = [parts[0]] + [{"type": "audio", "audio": decode_input_audio(InputAudio(**p["input_audio"]), "x")}
                          for p in parts[1:]]
    tok = random_live.server.tokenizer
    prompt = encode_chat(tok, [{"role": "user", "content": local}], part_join=OFFICIAL_PART_JOIN,
                         audio_config=random_live.server.audio_config, channel="mean")
    assert out.usage.prompt_tokens == len(prompt.input_ids) > 9 * len(formats)  # 0.6 s: 7 audio tokens + 2
    assert 1 <= out.usage.completion_tokens <= 4


def test_n_choices_and_seeds(random_live):
    kw = dict(max_tokens=6, temperature=1.0, seed=7, n=3)
    first, again = ask(random_live, "Hi", **kw), ask(random_live, "Hi", **kw)
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert [c.message.reasoning_content for c in first.choices] == [c.message.reasoning_content for c in again.choices]
    assert first.usage.completion_tokens == sum(c.usage.completion_tokens for c in [again]) <= 18


def test_concurrent_requests_equal_one_at_a_time(random_live):
    """Greedy completions are the same whether requests share decoding steps or run alone."""
    prompts = ["Hello", "What do you hear?", "Count the beeps please.", "Is the second tone higher?"]
    alone = [ask(random_live, p, max_tokens=12, temperature=0).choices[0].message.reasoning_content for p in prompts]
    before = random_live.server.scheduler.forwards
    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(lambda p: ask(random_live, p, max_tokens=12, temperature=0), prompts))
    assert [o.choices[0].message.reasoning_content for o in together] == alone
    assert random_live.server.scheduler.forwards - before <= sum(o.usage.completion_tokens for o in together)


# ------------------------------------------------------------------------------------------------ streaming
def test_stream_reasoning_then_content_then_usage(scripted_live):
    stream = ask(scripted_live, "Which?", max_tokens=64, stream=True, stream_options={"include_usage": True})
    kinds, reasoning, content, finish, usage = [], "", "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            piece = getattr(choice.delta, "reasoning_content", None)
            if piece:
                reasoning += piece
                kinds.append("r")
            if choice.delta.content:
                content += choice.delta.content
                kinds.append("c")
            finish = choice.finish_reason or finish
    assert reasoning == REASONING and content == ANSWER and finish == "stop"
    assert kinds == sorted(kinds, reverse=True) and "r" in kinds and kinds.count("c") > 1  # r... then c...
    assert usage is not None and usage.completion_tokens == len(script_ids(scripted_live.server.tokenizer)) - 1


def test_official_client_request_over_http(scripted_live):
    """The Step-Audio-R1 client's payload (role human, an open assistant "<think>\\n", continue_final_message,
    stop_token_ids, skip_special_tokens false, 25 s chunks as input_audio parts) streams a well-formed answer."""
    eot = scripted_live.server.tokenizer.convert_tokens_to_ids("<|EOT|>")
    payload = {
        "model": "scripted", "stream": True, "max_tokens": 64, "temperature": 0.7, "repetition_penalty": 1.0,
        "top_p": 0.9, "skip_special_tokens": False, "stop_token_ids": [eot],
        "continue_final_message": True, "add_generation_prompt": False,
        "messages": [
            {"role": "system", "content": "You are a voice assistant."},
            {"role": "human",
             "content": [{"type": "text", "text": "Which tone is higher?"}, audio_part(), audio_part()]},
            {"role": "assistant", "content": "<think>\n", "eot": False},
        ],
    }
    with httpx.stream("POST", scripted_live.url + "/v1/chat/completions", json=payload, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "scripted" for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0]["role"] == "assistant"
    assert "".join(d.get("reasoning_content", "") for d in deltas) == REASONING
    assert "".join(d.get("content") or "" for d in deltas) == ANSWER  # no "<|EOT|>": a stop id is not text
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_stop_strings_cut_the_text(scripted_live):
    out = ask(scripted_live, "Which?", max_tokens=64, stop=["fifth", "zzz"])
    assert out.choices[0].message.content == ANSWER[: ANSWER.index("fifth")] and out.choices[0].finish_reason == "stop"
    text = ""
    for chunk in ask(scripted_live, "Which?", max_tokens=64, stop="Up", stream=True):
        text += "".join(c.delta.content or "" for c in chunk.choices)
    assert text == ANSWER[: ANSWER.index("Up")]


def test_a_client_that_disconnects_frees_its_slot(random_live):
    sched = random_live.server.scheduler
    cancelled = sched.cancelled
    payload = {"messages": [{"role": "user", "content": GREEDY_LONG}], "max_tokens": 250, "temperature": 0,
               "stream": True}
    with httpx.stream("POST", random_live.url + "/v1/chat/completions", json=payload, timeout=60) as r:
        lines = r.iter_lines()
        while not next(lines).startswith("data: "):
            pass
    deadline = time.monotonic() + 20  # the whole completion would take far longer (250 tokens on a loaded CPU)
    while (sched.cancelled == cancelled or sched.load["running_rows"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sched.cancelled == cancelled + 1 and sched.load == {"running_jobs": 0, "running_rows": 0, "waiting_jobs": 0}


# ------------------------------------------------------------------------------------------------ auth, errors, limits
def test_api_key(keyed_live):
    with pytest.raises(openai.AuthenticationError):
        ask(keyed_live, "Hi", max_tokens=2)
    with pytest.raises(openai.AuthenticationError):
        client(keyed_live, api_key="wrong").models.list()
    assert client(keyed_live, api_key="sesame").models.list().data[0].id == "tiny"
    assert httpx.get(keyed_live.url + "/health").status_code == 200  # liveness needs no key


def test_queue_full_is_429(tiny_dir):
    from mgrd.serve.app import create_app, load_server

    server = load_server(tiny_dir, max_num_seqs=1, max_waiting=1, max_model_len=320)
    live = Live(create_app(server))
    long = {"messages": [{"role": "user", "content": GREEDY_LONG}], "max_tokens": 250, "temperature": 0,
            "stream": True}
    try:
        with httpx.stream("POST", live.url + "/v1/chat/completions", json=long, timeout=60) as running:
            until(lambda: server.scheduler.load["running_rows"] == 1)  # it holds the one row
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                waiting = pool.submit(httpx.post, live.url + "/v1/chat/completions", timeout=60,
                                      json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
                until(lambda: server.scheduler.load["waiting_jobs"] == 1)
                refused = httpx.post(live.url + "/v1/chat/completions", timeout=60,
                                     json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
                assert refused.status_code == 429 and refused.json()["error"]["code"] == "queue_full"
                running.close()
                assert waiting.result().status_code == 200
    finally:
        live.stop()
        server.scheduler.stop()


def until(condition, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _chat(**extra) -> dict:
    return {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, **extra}


def _user(*parts) -> dict:
    return {"messages": [{"role": "user", "content": list(parts)}], "max_tokens": 2}


BAD_REQUESTS = {
    "invalid base64": (_user({"type": "input_audio", "input_audio": {"data": "not base64!", "format": "wav"}}),
                       400, "invalid_base64"),
    "audio that does not decode": (_user({"type": "input_audio", "input_audio": {"data": "AAAAAAAA", "format": "wav"}}),
                                   400, "invalid_audio"),
    "unsupported format": (_user({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "aac"}}),
                           400, "unsupported_audio_format"),
    "too many seconds": (_user(audio_part(tone(seconds=2.5)), audio_part(tone(seconds=2.5))), 400, "audio_too_long"),
    "too many parts": (_user(*[audio_part(tone(seconds=0.2))] * 4), 400, "too_many_audio_parts"),
    "unknown model": (_chat(model="gpt-4o"), 404, "model_not_found"),
    "negative max_tokens": (_chat(max_tokens=-1), 400, None),
    "huge max_tokens": (_chat(max_tokens=10**9), 400, "context_length_exceeded"),
    "too many choices": (_chat(n=5), 400, None),
    "both prompt flags": (_chat(continue_final_message=True), 400, None),
    "unknown voice": (_chat(modalities=["text", "audio"], audio={"voice": "robot9", "format": "wav"}), 400, None),
    "bad role": ({"messages": [{"role": "", "content": "x"}]}, 400, None),
    "no messages": ({"messages": []}, 400, None),
    "wrong part type": (_user({"type": "image_url", "image_url": {"url": "x"}}), 400, None),
    "system not first": ({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]},
                         400, None),
    "frequency penalty": (_chat(frequency_penalty=0.5), 400, None),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_is_a_clear_4xx_and_the_server_stays_up(random_live, case):
    body, status, code = BAD_REQUESTS[case]
    r = httpx.post(random_live.url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code:
        assert error["code"] == code
    assert httpx.get(random_live.url + "/health").json()["status"] == "ok"


def test_transport_level_errors(random_live):
    url = random_live.url + "/v1/chat/completions"
    r = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    big = json.dumps(_user({"type": "input_audio", "input_audio": {"data": "A" * (1_200_000), "format": "wav"}}))
    r = httpx.post(url, content=big.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = httpx.get(random_live.url + "/v1/nothing-here")
    assert r.status_code == 404 and "error" in r.json()
    assert httpx.get(random_live.url + "/health").json()["status"] == "ok"
