"""`mgrd.serve.protocol` without a server: token ids to reasoning/answer pieces, stop strings, request checks,
and the response document `mgrd generate --json` shares."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgrd.chat import split_reasoning
from mgrd.generate import Completion
from mgrd.serve.protocol import ApiError, ChatCompletionRequest, Limits, RowText, chat_completion, prepare

TEXT = "two beeps, then\n</think>\n\nB. It is the second one."


def pieces(tok, text: str, **kw) -> tuple[str, str, RowText]:
    row = RowText(tok, **kw)
    reasoning, answer = "", ""
    for token in tok(text, add_special_tokens=False)["input_ids"]:
        r, a = row.push(token)
        reasoning, answer = reasoning + r, answer + a
    r, a = row.finish()
    return reasoning + r, answer + a, row


def test_pieces_join_to_the_split_of_the_whole_text(tok):
    reasoning, answer, row = pieces(tok, TEXT)
    assert (reasoning, answer) == split_reasoning(TEXT) and row.split.has_answer and not row.stopped


@settings(max_examples=60, deadline=None, database=None)
@given(stop=st.text(alphabet="abcdehinopst .\n</>", min_size=1, max_size=6))
def test_a_stop_string_cuts_the_text_before_its_first_occurrence(tok, stop):
    """Wherever the stop string falls (inside a token, across tokens, in the reasoning or the answer), the text is
    the split of everything before its first occurrence; absent, nothing changes."""
    reasoning, answer, row = pieces(tok, TEXT, stop_strings=[stop])
    cut = TEXT.find(stop)
    expected = split_reasoning(TEXT[:cut] if cut >= 0 else TEXT)
    assert (reasoning, answer if row.split.has_answer else None) == expected
    assert row.stopped == (cut >= 0)


def test_stop_ids_are_counted_but_are_not_text(tok, ids):
    row = RowText(tok, stop_ids=[ids.eot], skip_special_tokens=False)
    out = [row.push(t) for t in tok("x</think>y", add_special_tokens=False)["input_ids"] + [ids.eot]]
    assert "".join(a for _, a in out) + row.finish()[1] == "y" and row.tokens == len(out)


def test_an_open_prefix_that_closed_its_thinking_makes_everything_answer(tok):
    reasoning, answer, row = pieces(tok, "Second.", prefix="<think>\nsure\n</think>\n")
    assert (reasoning, answer) == ("", "Second.") and row.split.has_answer


def test_chat_completion_is_the_generate_json_shape():
    done = Completion(token_ids=[1, 2, 3], logprobs=[0.0] * 3, text="two beeps\n</think>\n\nB", finish_reason="stop")
    cut = Completion(token_ids=[4, 5], logprobs=[0.0] * 2, text="still thinking", finish_reason="length")
    doc = chat_completion([done, cut], prompt_tokens=10, model="m")
    assert doc["object"] == "chat.completion" and doc["model"] == "m" and doc["id"].startswith("chatcmpl-")
    assert doc["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "B", "reasoning_content": "two beeps"},
         "finish_reason": "stop"},
        {"index": 1, "message": {"role": "assistant", "content": None, "reasoning_content": "still thinking"},
         "finish_reason": "length"},
    ]
    assert doc["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


def _prepare(tok, **body):
    req = ChatCompletionRequest(**{"messages": [{"role": "user", "content": "Hi"}], **body})
    return prepare(req, tok, None, Limits(max_model_len=64, default_max_tokens=8, max_n=2))


def test_sampling_fields_map_onto_the_sampling_config(tok):
    p = _prepare(tok, temperature=1e-7, top_k=-1, top_p=0.5, repetition_penalty=1.1, seed=3, stop_token_ids=[7],
                 stop="x", max_completion_tokens=5, max_tokens=9)
    assert (p.cfg.temperature, p.cfg.top_k, p.cfg.top_p, p.cfg.repetition_penalty, p.cfg.seed) == (0.0, 0, 0.5, 1.1, 3)
    assert p.cfg.stop_ids == (7,) and p.stop_strings == ("x",) and p.cfg.max_new_tokens == 5
    assert _prepare(tok).cfg.max_new_tokens == 8  # the server's default budget
    assert _prepare(tok, messages=[{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}])


@pytest.mark.parametrize("body, message", [
    ({"n": 3}, "n must be at most 2"),
    ({"max_tokens": 60}, "maximum context length is 64 tokens"),
    ({"presence_penalty": 1.0}, "presence_penalty is not supported"),
    ({"stop": ["ok", ""]}, "stop strings must not be empty"),
    ({"modalities": ["audio"]}, "modalities must include 'text'"),
    ({"messages": [{"role": "user", "content": "x" * 200}]}, "the model's context is 64"),
])
def test_requests_the_server_cannot_honour_are_400(tok, body, message):
    with pytest.raises(ApiError, match=message) as err:
        _prepare(tok, **body)
    assert err.value.status == 400 and set(err.value.body()["error"]) == {"message", "type", "param", "code"}


def test_concurrent_prepares_share_one_tokenizer_safely(tok):
    """Eight threads encoding prompts on one tokenizer, as the server's worker threads do, all get the prompt a
    lone call gets (the lock keeps `split_special_tokens` from leaking between them)."""
    import concurrent.futures
    import threading

    lock = threading.Lock()
    limits = Limits(max_model_len=256)
    reqs = [ChatCompletionRequest(messages=[{"role": "user", "content": f"Which tone {i} <|EOT|> is higher?"}])
            for i in range(64)]
    alone = [prepare(r, tok, None, limits).prompt.input_ids for r in reqs]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda r: prepare(r, tok, None, limits, lock).prompt.input_ids, reqs))
    assert together == alone


@pytest.mark.parametrize("field, value", [("top_p", 5e-324), ("repetition_penalty", 5e-324), ("temperature", -1.0)])
def test_values_that_overflow_the_sampling_maths_are_refused(field, value):
    """Found by the schemathesis run: a top_p that is 0 in float32 dropped every token, a tiny penalty overflowed."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=field):
        ChatCompletionRequest(messages=[{"role": "user", "content": "x"}], **{field: value})
