"""The judge client against a real local HTTP server: cache hits, retries on 429/5xx, no retry on 4xx,
invalid replies counted, replay from the cache."""

import pytest
from eval.servers import completion, serve
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from mgrd.judge import Judge, JudgeConfig, JudgeError


class ScriptedJudge:
    """An OpenAI-compatible server whose replies follow a script: a list of (status, text) per request;
    when the script is used up it answers CORRECT."""

    def __init__(self):
        self.script: list[tuple[int, str]] = []
        self.requests: list[dict] = []
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            self.requests.append(await request.json())
            status, text = self.script.pop(0) if self.script else (200, "CORRECT")
            if status != 200:
                return JSONResponse({"error": {"message": text, "type": "server_error"}}, status_code=status)
            return completion(text)

        self.app = app


@pytest.fixture(scope="module")
def judge_server():
    scripted = ScriptedJudge()
    with serve(scripted.app) as url:
        yield scripted, url


def make_judge(url, tmp_path, **kw):
    waits = []
    judge = Judge(JudgeConfig(base_url=url, model="judge", cache_dir=tmp_path / "cache", backoff_s=0.5, **kw),
                  sleep=waits.append)
    return judge, waits


def parse(text):
    return {"CORRECT": 1.0, "INCORRECT": 0.0}.get(text.strip())


def test_reply_is_cached_by_request_hash(judge_server, tmp_path):
    server, url = judge_server
    server.requests.clear()
    judge, _ = make_judge(url, tmp_path)
    first = judge.judge("Is 2+2=4?", parse)
    second = judge.judge("Is 2+2=4?", parse)
    assert (first.verdict, first.cached, second.verdict, second.cached) == (1.0, False, 1.0, True)
    assert len(server.requests) == 1 and server.requests[0]["temperature"] == 0.0
    # a fresh client over the same cache folder asks nothing either
    again, _ = make_judge(url, tmp_path)
    assert again.judge("Is 2+2=4?", parse).cached and len(server.requests) == 1
    assert judge.stats.to_dict() == {"requests": 2, "cache_hits": 1, "calls": 1, "retries": 0, "failures": 0,
                                     "invalid": 0}
    assert judge.cache_key([{"role": "user", "content": "a"}]) != judge.cache_key([{"role": "user", "content": "b"}])


def test_retries_500_and_429_with_doubling_backoff(judge_server, tmp_path):
    server, url = judge_server
    server.requests.clear()
    server.script = [(500, "boom"), (429, "slow down"), (503, "busy"), (200, "INCORRECT")]
    judge, waits = make_judge(url, tmp_path)
    got = judge.judge("q", parse)
    assert got.verdict == 0.0 and len(server.requests) == 4
    assert waits == [0.5, 1.0, 2.0]
    assert (judge.stats.retries, judge.stats.calls, judge.stats.failures) == (3, 4, 0)


def test_gives_up_after_the_retries_and_does_not_retry_400(judge_server, tmp_path):
    server, url = judge_server
    server.script = [(500, "down")] * 3
    judge, _ = make_judge(url, tmp_path, max_retries=2)
    with pytest.raises(JudgeError, match="HTTP 500"):
        judge.judge("q1", parse)
    assert judge.stats.failures == 1 and judge.stats.calls == 3
    server.requests.clear()
    server.script = [(400, "bad request")]
    with pytest.raises(JudgeError, match="HTTP 400"):
        judge.judge("q2", parse)
    assert len(server.requests) == 1  # a client error is not retried


def test_invalid_replies_are_counted(judge_server, tmp_path):
    server, url = judge_server
    server.script = [(200, "I am not sure")]
    judge, _ = make_judge(url, tmp_path)
    got = judge.judge("q3", parse)
    assert got.invalid and got.text == "I am not sure" and judge.stats.invalid == 1


def test_replay_reads_the_cache_and_misses_are_errors(judge_server, tmp_path):
    server, url = judge_server
    judge, _ = make_judge(url, tmp_path)
    judge.judge("cached question", parse)
    replay = Judge(JudgeConfig(model="judge", cache_dir=tmp_path / "cache", replay=True))
    assert replay.judge("cached question", parse).cached
    with pytest.raises(JudgeError, match="not in the cache"):
        replay.judge("never asked", parse)
    with pytest.raises(ValueError, match="base_url"):
        Judge(JudgeConfig())
